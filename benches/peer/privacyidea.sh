#!/usr/bin/env bash
# Starts privacyIDEA (the established open-source OTP server) as the load tool's peer:
# SQLite, gunicorn with 2 workers, and TOKENS TOTP tokens PI00000..PI<TOKENS-1> whose keys
# are the 20-byte big-endian numbers 1..TOKENS (hex: printf %040x), so the load tool can
# compute their codes. Prints READY when it serves; stays in the foreground until killed.
#
#   benches/peer/privacyidea.sh PORT TOKENS WORKDIR
#
# privacyIDEA is installed from PyPI into target/peer/privacyidea-venv on first use.
set -euo pipefail
port=$1 tokens=$2 work=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/target/peer/privacyidea-venv"
if [ ! -x "$venv/bin/gunicorn" ] || [ ! -x "$venv/bin/pi-manage" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q privacyidea gunicorn
fi
mkdir -p "$work"
cd "$work"   # pi-manage writes a log into the working folder before it reads the config
export PRIVACYIDEA_CONFIGFILE="$work/pi.cfg"
cat > "$PRIVACYIDEA_CONFIGFILE" <<CFG
SQLALCHEMY_DATABASE_URI = 'sqlite:///$work/privacyidea.sqlite'
SECRET_KEY = '$(head -c 24 /dev/urandom | base64)'
PI_PEPPER = '$(head -c 24 /dev/urandom | base64)'
PI_ENCFILE = '$work/enckey'
PI_AUDIT_KEY_PRIVATE = '$work/audit-private.pem'
PI_AUDIT_KEY_PUBLIC = '$work/audit-public.pem'
PI_LOGFILE = '$work/privacyidea.log'
PI_LOGLEVEL = 30
CFG
pi() { "$venv/bin/pi-manage" "$@" >/dev/null 2>&1; }
pi setup create_enckey
pi setup create_audit_keys
pi setup create_tables
pi admin add bench -p bench-password

"$venv/bin/gunicorn" --workers 2 --bind "127.0.0.1:$port" --log-level warning \
  "privacyidea.app:create_app(config_name='production', config_file='$PRIVACYIDEA_CONFIGFILE', silent=True)" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.3
done
auth=$(curl -sf -X POST "http://127.0.0.1:$port/auth" -d username=bench -d password=bench-password |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["value"]["token"])')
for i in $(seq 0 $((tokens - 1))); do
  serial=$(printf 'PI%05d' "$i")
  key=$(printf '%040x' $((i + 1)))
  curl -sf -o /dev/null -H "Authorization: $auth" -X POST "http://127.0.0.1:$port/token/init" \
    -d type=totp -d serial="$serial" -d otpkey="$key" -d genkey=0 -d otplen=6 -d timeStep=30 -d hashlib=sha1
  # Wrong codes must not lock the token: tessera's run has lockout off too.
  curl -sf -o /dev/null -H "Authorization: $auth" -X POST "http://127.0.0.1:$port/token/set" \
    -d serial="$serial" -d max_failcount=100000000
done
echo READY
wait $server
