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

port_open() { (echo > "/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }

# MongoDB-wire-compatible test server (SecantusDB from PyPI, pinned), in a venv
# beside the repository; its PID goes to .venv-mongo/secantus.pid so that
# scripts/test.sh can stop it at the end.
mongo_ping() {
    .venv-mongo/bin/python - "$MONGO_PORT" >/dev/null 2>&1 <<'PY'
import sys, pymongo
pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}", serverSelectionTimeoutMS=2000).admin.command("ping")
PY
}

start_mongo() {
    if ! .venv-mongo/bin/python -c "import secantus, pymongo" >/dev/null 2>&1; then
        log "installing SecantusDB 0.7.0b3 into .venv-mongo"
        python3 -m venv .venv-mongo
        .venv-mongo/bin/pip install --quiet --disable-pip-version-check "secantusdb==0.7.0b3"
    fi
    if port_open "$MONGO_PORT"; then
        if mongo_ping; then log "mongo (port $MONGO_PORT) is up"; return 0; fi
        # Something is closing or stuck on the port: give it time to go away.
        for _ in $(seq 1 40); do port_open "$MONGO_PORT" || break; sleep 0.5; done
    fi
    log "starting SecantusDB on 127.0.0.1:$MONGO_PORT"
    mkdir -p target
    nohup .venv-mongo/bin/python -m secantus --host 127.0.0.1 --port "$MONGO_PORT" \
        --storage-path :memory: --standalone > target/secantus.log 2>&1 &
    echo $! > .venv-mongo/secantus.pid
    wait_for mongo mongo_ping
}

for s in ${SUNDIAL_SERVICES:-postgres mariadb redis mongo}; do
    case $s in
        postgres) command -v pg_ctlcluster >/dev/null && start_postgres || log "postgres not installed" ;;
        mariadb) command -v mysqladmin >/dev/null && start_mariadb || log "mariadb not installed" ;;
        redis) command -v redis-server >/dev/null && start_redis || log "redis not installed" ;;
        mongo) start_mongo ;;
    esac
done
