#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start them where installed but down.
# Never stops or wipes a running server: tests create their own throw-away database.
set -euo pipefail

PG_HOST=${TOV_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${TOV_TEST_PG_PORT:-5432}
REDIS_PORT=${TOV_TEST_REDIS_PORT:-6379}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "PostgreSQL is not answering on $PG_HOST:$PG_PORT; starting it"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not come up" >&2; exit 1; }
fi

if ! redis_up; then
  echo "Redis is not answering on 127.0.0.1:$REDIS_PORT; starting it"
  command -v redis-server >/dev/null || { echo "Redis is not installed (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  redis_up || { echo "Redis did not come up" >&2; exit 1; }
fi
echo "PostgreSQL and Redis are up"
