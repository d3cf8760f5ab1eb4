# The Sentinel beside a Redis node (the same name as redis.sh: BANDVOTE_REDIS_NODE, else
# HOSTNAME.redis).
set -eu
umask 077
me="${BANDVOTE_REDIS_NODE:-$(hostname).redis}"
primary=$(sh /scripts/primary.sh)
# Sentinel rewrites its file (the replicas and Sentinels it learns): it lives on a tmpfs and
# is written afresh at every start from what the other Sentinels know.
cat > /run/sentinel/sentinel.conf <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor bandvote $primary 6379 2
sentinel auth-pass bandvote $REDISCLI_AUTH
sentinel down-after-milliseconds bandvote 5000
sentinel failover-timeout bandvote 60000
sentinel parallel-syncs bandvote 1
CONF
exec redis-server /run/sentinel/sentinel.conf --sentinel
