"""CPU per login check: the tessera process's user + system time (from /proc) divided by the
checks it answered, for two or more release binaries, alternating in one run against one
redis-server, with wrk sending wrong codes for random users (lockout and limits off, logs at
warn). CPU per check is steadier than requests per second on a shared machine.

    python3 benches/compare/cpu_per_check.py OLD_BINARY NEW_BINARY [--rounds 5]

The last binary enrolls the users and mints the tokens (`tessera dev` on the Redis store; its
development keys are the same in every release). See BENCHMARKS.md for how to build a
previous release beside this one. Needs redis-server, wrk, oathtool.
"""
import json, os, subprocess, sys, time, urllib.request, concurrent.futures, socket
def free_port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
args = sys.argv[1:]
rounds = 5
if "--rounds" in args:
    i = args.index("--rounds")
    rounds = int(args[i + 1])
    del args[i:i + 2]
binaries = [os.path.abspath(b) for b in args]
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rport = free_port()
redis = subprocess.Popen(["redis-server","--port",str(rport),"--bind","127.0.0.1","--save","","--appendonly","no"],stdout=subprocess.DEVNULL)
time.sleep(0.3)
def start(binary):
    port, gport = free_port(), free_port()
    env = dict(os.environ, TESSERA__STORE__KIND="redis", TESSERA__REDIS__URL=f"redis://127.0.0.1:{rport}",
               TESSERA__HTTP__ADDR=f"127.0.0.1:{port}", TESSERA__GRPC__ADDR=f"127.0.0.1:{gport}",
               TESSERA__LOG__LEVEL="warn", TESSERA__LIMITS__PER_USER_PER_MINUTE="0",
               TESSERA__LIMITS__PER_ORG_PER_SECOND="0", TESSERA__LIMITS__PER_ADDRESS_PER_SECOND="0",
               TESSERA__LOCKOUT__MAX_OTP_ATTEMPTS="0")
    p = subprocess.Popen([binary,"dev"],env=env,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=root)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/ready"); return p, port
        except Exception: time.sleep(0.1)
    raise SystemExit("not ready")
def token(user, roles=()):
    args=[binaries[-1],"token","--org","acme","--user",user]
    for r in roles: args += ["--role", r]
    return subprocess.run(args,capture_output=True,text=True,cwd=root).stdout.strip()
USERS=1000
p, port = start(binaries[-1])
def enroll(i):
    t = token(f"u{i}")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/auth/v1/users/me/auth_factors/otp", data=b"{}", headers={"Authorization":"Bearer "+t}, method="POST")
    sec = json.load(urllib.request.urlopen(req))["secret"]
    code = subprocess.run(["oathtool","--totp","-b",sec],capture_output=True,text=True).stdout.strip()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/auth/v1/users/me/auth_factors/otp/_verify", data=json.dumps({"code":code}).encode(), headers={"Authorization":"Bearer "+t}, method="POST")
    urllib.request.urlopen(req)
with concurrent.futures.ThreadPoolExecutor(16) as ex: list(ex.map(enroll, range(USERS)))
p.terminate(); p.wait()
checker = token("checker", ["otp.check"])
lua = f"""
request = function()
  local path = "/management/v1/users/u" .. math.random(0, {USERS-1}) .. "/auth_factors/otp/_check"
  return wrk.format("POST", path, {{["Authorization"]="Bearer {checker}", ["Content-Type"]="application/json"}}, '{{"code":"000000"}}')
end
"""
script = os.path.join("/tmp", f"tessera-cpu-{os.getpid()}.lua")
open(script, "w").write(lua)
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
results={b:[] for b in binaries}
for _ in range(rounds):
    for b in binaries:
        p, port = start(b)
        subprocess.run(["wrk","-t2","-c64","-d3s","-s",script,f"http://127.0.0.1:{port}"],capture_output=True)  # warm-up
        before=cpu(p.pid)
        out=subprocess.run(["wrk","-t2","-c64","-d10s","-s",script,f"http://127.0.0.1:{port}"],capture_output=True,text=True).stdout
        used=cpu(p.pid)-before
        reqs=int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
        rps=float([l for l in out.splitlines() if l.startswith("Requests/sec")][0].split()[1])
        results[b].append((rps, used*1e6/reqs))
        p.terminate(); p.wait()
        print(f"{os.path.basename(b)}: {rps:.0f} req/s, {used*1e6/reqs:.1f} µs CPU per check", flush=True)
for b,r in results.items():
    print(f"{os.path.basename(b)}: mean {sum(x for x,_ in r)/len(r):.0f} req/s, {sum(y for _,y in r)/len(r):.1f} µs CPU per check")
redis.terminate()
os.remove(script)
