# The Sentinel beside a Redis node (the same name as redis.sh: BANDVOTE_REDIS_NODE, else
# HOSTNAME.redis).
set -eu
umask 077
me="${BANDVOTE_REDIS_NODE:-$(hostname).redis}"
primary=$(sh /scripts/primary.sh)
# Sentinel rewrites its file (the replicas and Sentinels it learns): it lives on a tmpfs and
# is written afresh at every start from what the other Sentinels know.
#
# Who may do what: bandvote's clients cannot give a Sentinel a password (its redis-sentinel:// URL's
# password is the data nodes'), so the default user needs none, but it may only ask: PING and where
# the primary and its replicas are (what the clients, primary.sh and the probes send). Reconfiguring
# (SENTINEL SET, MONITOR, REMOVE, FAILOVER, CONFIG), ACL and SHUTDOWN take the user sentinel-peer,
# which the Sentinels log in as to each other, with the Redis password.
cat > /run/sentinel/sentinel.conf <<CONF
port 26379
user default on nopass resetchannels -@all +ping +role +sentinel|masters +sentinel|master +sentinel|slaves +sentinel|replicas +sentinel|get-master-addr-by-name
user sentinel-peer on >$REDISCLI_AUTH +@all allchannels
sentinel sentinel-user sentinel-peer
sentinel sentinel-pass $REDISCLI_AUTH
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
