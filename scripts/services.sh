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

for s in ${SUNDIAL_SERVICES:-postgres mariadb redis}; do
    case $s in
        postgres) command -v pg_ctlcluster >/dev/null && start_postgres || log "postgres not installed" ;;
        mariadb) command -v mysqladmin >/dev/null && start_mariadb || log "mariadb not installed" ;;
        redis) command -v redis-server >/dev/null && start_redis || log "redis not installed" ;;
    esac
done
