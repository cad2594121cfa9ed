//! A real browser (headless Chromium) calls tessera with gRPC-web from a page of another
//! origin: CORS lets the configured origin through and keeps every other one out.

use std::process::Command;

use actix_web::{App, HttpResponse, HttpServer, web};

use crate::helpers::{Backend, Spawn, TempDir, Token, free_port};

/// The page: frames gRPC-web messages by hand, calls tessera with fetch, writes the outcome
/// into the document for `--dump-dom`.
fn page(grpc: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>pending</title></head><body><pre id="out">pending</pre>
<script>
const GRPC = "{grpc}", TOKEN = "{token}";
function frame(bytes) {{
  const f = new Uint8Array(5 + bytes.length);
  new DataView(f.buffer).setUint32(1, bytes.length);
  f.set(bytes, 5);
  return f;
}}
async function call(method, message) {{
  const r = await fetch(GRPC + "/zitadel.auth.v1.AuthService/" + method, {{
    method: "POST",
    headers: {{"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "authorization": "Bearer " + TOKEN}},
    body: frame(message)
  }});
  const body = new Uint8Array(await r.arrayBuffer());
  let status = r.headers.get("grpc-status"), text = r.headers.get("grpc-message"), data = null;
  for (let i = 0; i + 5 <= body.length;) {{
    const len = new DataView(body.buffer, i + 1, 4).getUint32(0);
    const payload = body.slice(i + 5, i + 5 + len);
    if (body[i] & 0x80) {{
      for (const line of new TextDecoder().decode(payload).split("\r\n")) {{
        const [k, ...v] = line.split(":");
        if (k === "grpc-status") status = v.join(":").trim();
        if (k === "grpc-message") text = v.join(":").trim();
      }}
    }} else {{ data = payload; }}
    i += 5 + len;
  }}
  return {{status, text: text && decodeURIComponent(text), data}};
}}
function field(bytes, number) {{
  for (let i = 0; i < bytes.length;) {{
    let tag = 0, shift = 0, b;
    do {{ b = bytes[i++]; tag |= (b & 0x7f) << shift; shift += 7; }} while (b & 0x80);
    let len = 0; shift = 0;
    do {{ b = bytes[i++]; len |= (b & 0x7f) << shift; shift += 7; }} while (b & 0x80);
    if (tag >> 3 === number) return new TextDecoder().decode(bytes.slice(i, i + len));
    i += len;
  }}
  return "";
}}
(async () => {{
  const added = await call("AddMyAuthFactorOTP", new Uint8Array(0));
  const url = field(added.data, 1);
  const code = new TextEncoder().encode("000000");
  const wrong = await call("VerifyMyAuthFactorOTP", new Uint8Array([0x0a, code.length, ...code]));
  return `add=${{added.status}} otpauth=${{url.startsWith("otpauth://totp/")}} verify=${{wrong.status}} message=${{wrong.text}}`;
}})().then(r => document.getElementById("out").textContent = r,
           e => document.getElementById("out").textContent = "blocked: " + e.name);
</script></body></html>"#
    )
}

/// Serves `html` at `http://127.0.0.1:<port>/`: the page's origin.
fn serve_page(html: String, port: u16) {
    let server = HttpServer::new(move || {
        let html = html.clone();
        App::new().route(
            "/",
            web::get().to(move || {
                let html = html.clone();
                async move { HttpResponse::Ok().content_type("text/html").body(html) }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    actix_rt::spawn(server);
}

/// What the page wrote, as headless Chromium saw it once its scripts settled.
async fn browse(url: String) -> String {
    // A profile of its own, removed when the page has been read.
    let profile = TempDir::new("chromium");
    let profile_path = profile.0.clone();
    let output = actix_rt::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile_path.display()))
            .args(["--dump-dom", &url])
            .output()
    })
    .await
    .unwrap()
    .expect("chromium must be installed (scripts/test installs it)");
    drop(profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = dom.find("<pre id=\"out\">").expect("the page rendered") + "<pre id=\"out\">".len();
    dom[start..].split("</pre>").next().unwrap().to_owned()
}

#[actix_web::test]
async fn a_browser_page_calls_grpc_web_from_an_allowed_origin_only() {
    let page_port = free_port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let app = Spawn::new(Backend::Memory)
        .with(|s| s.grpc.cors_allowed_origins = vec![origin.clone()])
        .start()
        .await;
    let alice = Token::user("acme", "alice").sign();
    let html = page(&app.grpc_address, &alice);
    serve_page(html.clone(), page_port);

    let allowed = browse(format!("{origin}/")).await;
    assert_eq!(
        allowed, "add=0 otpauth=true verify=3 message=Invalid code (EVENT-8isk2)",
        "the page at the allowed origin"
    );
    // The same page from another origin: the browser refuses to hand it the answers.
    let other = free_port();
    serve_page(html, other);
    let refused = browse(format!("http://127.0.0.1:{other}/")).await;
    assert_eq!(refused, "blocked: TypeError");
}
