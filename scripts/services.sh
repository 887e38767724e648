#!/usr/bin/env bash
# Makes sure the servers the test suite talks to are up on this machine.
# Idempotent: a running server is left alone.
set -euo pipefail

log() { echo "services: $*" >&2; }

wait_for() { # name, check command...
    local name=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then log "$name is up"; return 0; fi
        sleep 0.5
    done
    log "$name did not come up"; return 1
}

start_postgres() {
    if pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then log "postgres is up"; return 0; fi
    log "starting postgres"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for postgres pg_isready -h 127.0.0.1 -p 5432
}

start_mariadb() {
    if mysqladmin -uroot -h127.0.0.1 status >/dev/null 2>&1; then log "mariadb is up"; return 0; fi
    log "starting mariadb"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    wait_for mariadb mysqladmin -uroot -h127.0.0.1 status
}

start_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then log "redis is up"; return 0; fi
    log "starting redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
}

MONGO_PORT=${SUNDIAL_MONGO_PORT:-27018}
MONGO_RS_PORT=${SUNDIAL_MONGO_RS_PORT:-27019}

port_open() { (echo > "/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }

# MongoDB-wire-compatible test servers (SecantusDB from PyPI, pinned), in a venv
# beside the repository: a standalone server on $MONGO_PORT for the suites, and
# one advertising a one-node replica set on $MONGO_RS_PORT for change streams.
# Their PIDs go to .venv-mongo/*.pid so that scripts/test.sh can stop them.
mongo_ping() {
    .venv-mongo/bin/python - "$1" >/dev/null 2>&1 <<'PY'
import sys, pymongo
pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true", serverSelectionTimeoutMS=2000).admin.command("ping")
PY
}

# start_secantus <port> <pid-file-name> [extra flags]
start_secantus() {
    local port=$1 pidfile=$2
    shift 2
    if port_open "$port"; then
        if mongo_ping "$port"; then log "mongo (port $port) is up"; return 0; fi
        # Something is closing or stuck on the port: give it time to go away.
        for _ in $(seq 1 40); do port_open "$port" || break; sleep 0.5; done
    fi
    log "starting SecantusDB on 127.0.0.1:$port $*"
    mkdir -p target
    nohup .venv-mongo/bin/python -m secantus --host 127.0.0.1 --port "$port" \
        --storage-path :memory: "$@" > "target/secantus-$port.log" 2>&1 &
    echo $! > ".venv-mongo/$pidfile"
    wait_for "mongo:$port" mongo_ping "$port"
}

start_mongo() {
    if ! .venv-mongo/bin/python -c "import secantus, pymongo" >/dev/null 2>&1; then
        log "installing SecantusDB 0.7.0b3 into .venv-mongo"
        python3 -m venv .venv-mongo
        .venv-mongo/bin/pip install --quiet --disable-pip-version-check "secantusdb==0.7.0b3"
    fi
    start_secantus "$MONGO_PORT" secantus.pid --standalone
    start_secantus "$MONGO_RS_PORT" secantus-rs.pid
}

# The dashboard's browser test drives headless Chromium through chromedriver.
install_browser() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        log "chromium and chromedriver are installed"; return 0
    fi
    log "installing chromium and chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

for s in ${SUNDIAL_SERVICES:-postgres mariadb redis mongo browser}; do
    case $s in
        postgres) command -v pg_ctlcluster >/dev/null && start_postgres || log "postgres not installed" ;;
        mariadb) command -v mysqladmin >/dev/null && start_mariadb || log "mariadb not installed" ;;
        redis) command -v redis-server >/dev/null && start_redis || log "redis not installed" ;;
        mongo) start_mongo ;;
        browser) install_browser ;;
    esac
done
