#!/bin/bash
# A Docker Swarm of several engines on one Linux machine, for trying scale-out without more
# machines: each node is its own dockerd in its own network namespace (its own data root, exec
# root and socket), on a bridge of its own in the host's namespace. Needs root.
#
#   swarm-lab/lab.sh up [IMAGE...]   3 managers + WORKERS_COUNT workers, IMAGEs loaded into each
#   swarm-lab/lab.sh down            removes everything `up` made (processes, namespaces, bridge,
#                                    mounts, data); the host's own engine is never touched
#   swarm-lab/lab.sh front PORT SERVICE IMAGE
#                                    nginx on 127.0.0.1:PORT before SERVICE's healthy tasks on all
#                                    nodes (foreground: it refreshes its targets every second)
#   swarm-lab/lab.sh kill NODE       the node is lost: its link goes down, its dockerd,
#                                    containerd and containers are killed (SIGKILL)
#   swarm-lab/lab.sh revive NODE     the link comes back and its dockerd starts again (it rejoins)
#   swarm-lab/lab.sh docker NODE ... the docker CLI against that node's engine
#   swarm-lab/lab.sh address NODE    the node's address on the lab bridge
#
# Every name starts with LAB (default tblab), so that several labs, and other users of the host's
# engine, are left alone. `ip netns exec` is not used: it remounts /sys, and dockerd then fails
# with "Devices cgroup isn't mounted"; `nsenter --net` changes the network namespace only.
set -euo pipefail

LAB=${LAB:-tblab}
# The lab's own /24 on the bridge: .1 is the host, the nodes from .11.
SUBNET=${LAB_SUBNET:-10.213.0}
WORKERS_COUNT=${LAB_WORKERS:-1}
STATE=/run/$LAB
DATA=/var/lib/$LAB
BRIDGE=${LAB}0
me="lab.sh"

log() { echo "$me: $*" >&2; }
die() { log "error: $*"; exit 1; }

nodes() {
    echo m1 m2 m3
    for i in $(seq 1 "$WORKERS_COUNT"); do echo "w$i"; done
}

index_of() {
    local i=11 node
    for node in $(nodes); do
        [ "$node" = "$1" ] && { echo "$i"; return; }
        i=$((i + 1))
    done
    die "no node named '$1' (nodes: $(nodes | tr '\n' ' '))"
}

address() { echo "$SUBNET.$(index_of "$1")"; }
netns() { echo "$LAB-$1"; }
socket() { echo "unix://$STATE/$1/docker.sock"; }
node_docker() {
    local node=$1
    shift
    docker -H "$(socket "$node")" "$@"
}

start_engine() {
    local node=$1 dir=$STATE/$1
    mkdir -p "$dir" "$DATA/$node"
    # Its own everything, in its own network namespace. The bridge IP and docker0 are in that
    # namespace, so the default ranges do not collide with the host's engine.
    nsenter --net="/var/run/netns/$(netns "$node")" \
        setsid dockerd --data-root "$DATA/$node" --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" -H "$(socket "$node")" --cgroup-parent "$LAB-$node" \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 150); do
        node_docker "$node" info >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    tail -n 20 "$dir/dockerd.log" >&2
    die "dockerd of $node did not start (log: $dir/dockerd.log)"
}

add_node() {
    local node=$1 ns veth
    ns=$(netns "$node")
    veth="$LAB-$node"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(address "$node")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    start_engine "$node"
}

up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces, a bridge, dockerd)"
    ip link show "$BRIDGE" >/dev/null 2>&1 && die "a lab named $LAB exists already ($me down first)"
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Docker sets the FORWARD policy to DROP, and bridged frames pass through iptables here
    # (br_netfilter): let the nodes talk to each other (Swarm: 2377, 7946, VXLAN 4789).
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment "$LAB"
    local node
    for node in $(nodes); do
        add_node "$node" &
    done
    wait
    # No registry: each engine gets the images from the host's engine.
    local image
    for image in "$@"; do
        for node in $(nodes); do
            docker save "$image" | node_docker "$node" load --quiet >/dev/null &
        done
        wait
    done
    node_docker m1 swarm init --advertise-addr "$(address m1)" >/dev/null
    local manager_token worker_token
    manager_token=$(node_docker m1 swarm join-token --quiet manager)
    worker_token=$(node_docker m1 swarm join-token --quiet worker)
    for node in $(nodes); do
        case $node in
        m1) ;;
        m*) node_docker "$node" swarm join --token "$manager_token" "$(address m1):2377" >/dev/null ;;
        *) node_docker "$node" swarm join --token "$worker_token" "$(address m1):2377" >/dev/null ;;
        esac
    done
    # The hostnames are all this machine's: a label tells the nodes apart, and gives the stack's
    # placement preference (spread over node.labels.zone) one zone per node.
    for node in $(nodes); do
        node_docker m1 node update --label-add "zone=$node" \
            "$(node_docker "$node" info --format '{{.Swarm.NodeID}}')" >/dev/null
    done
    node_docker m1 network create --driver overlay --attachable "$LAB-net" >/dev/null
    log "up: $(nodes | tr '\n' ' ')on $BRIDGE ($SUBNET.0/24); docker -H $(socket m1) node ls"
}

kill_engine() {
    local node=$1 dir=$STATE/$1 pids
    # Everything the node runs: dockerd, its containerd and shims (by their sockets and paths),
    # and the containers' processes (children of the shims).
    pids=$(pgrep -f -- "$dir/" || true)
    for pid in $pids; do
        pids="$pids $(pgrep -P "$pid" || true)"
    done
    # shellcheck disable=SC2086 # a list of pids
    [ -z "${pids// /}" ] || kill -9 $pids 2>/dev/null || true
}

# The front load balancer: nginx on 127.0.0.1:PORT in the host's namespace (a container of the
# host's engine, from IMAGE, which has nginx), in front of every healthy task of SERVICE on
# every node, with passive health checks and retries on another node, the way a cloud load
# balancer sits in front of a real cluster. Its target list is refreshed every second from the
# nodes (the registration a cloud load balancer gets from its cluster); runs in the foreground.
front_upstreams() {
    local service=$1 node addr port found=0
    for node in $(nodes); do
        addr=$(address "$node")
        for port in $(node_docker "$node" ps --filter "label=com.docker.swarm.service.name=$service" \
            --filter health=healthy --format '{{.Ports}}' 2>/dev/null |
            sed -n 's/.*0\.0\.0\.0:\([0-9]*\)->80\/tcp.*/\1/p'); do
            echo "    server $addr:$port max_fails=1 fail_timeout=5s;"
            found=1
        done
    done
    # nginx wants at least one server.
    [ "$found" = 1 ] || echo "    server 127.0.0.1:9 down;"
}

front() {
    local port=$1 service=$2 image=$3 dir=$STATE/front name=$LAB-front upstreams
    mkdir -p "$dir"
    chmod 755 "$dir"
    sed "s/@PORT@/$port/" "$(dirname "$0")/front.conf" >"$dir/nginx.conf"
    front_upstreams "$service" >"$dir/upstreams.conf"
    chmod 644 "$dir"/*.conf
    docker run --detach --name "$name" --network host --volume "$dir:/front:ro" \
        --entrypoint nginx "$image" -c /front/nginx.conf >/dev/null
    log "front: http://127.0.0.1:$port/ -> $service on every node"
    # `down` ends this loop by the pid recorded here, and nothing else.
    echo $$ >"$dir/refresh.pid"
    while sleep 1; do
        upstreams=$(front_upstreams "$service")
        if [ "$upstreams" != "$(cat "$dir/upstreams.conf")" ]; then
            echo "$upstreams" >"$dir/upstreams.conf.new"
            chmod 644 "$dir/upstreams.conf.new"
            mv "$dir/upstreams.conf.new" "$dir/upstreams.conf"
            docker exec "$name" nginx -c /front/nginx.conf -s reload >/dev/null 2>&1 || true
        fi
    done
}

kill_node() {
    ip link set "$LAB-$1" down
    kill_engine "$1"
}

revive_node() {
    ip link set "$LAB-$1" up
    start_engine "$1"
}

down() {
    local node dir
    docker rm --force "$LAB-front" >/dev/null 2>&1 || true
    if [ -s "$STATE/front/refresh.pid" ]; then
        kill "$(cat "$STATE/front/refresh.pid")" 2>/dev/null || true
    fi
    # The whole swarm goes, with its data: no need to leave it politely first.
    for node in $(nodes); do
        kill_engine "$node"
    done
    # What the engines mounted (netns files, overlay, shm): innermost first.
    mount | awk -v state="$STATE" -v data="$DATA" '$3 ~ "^(" state "|" data ")(/|$)" {print $3}' \
        | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    for node in $(nodes); do
        ip netns del "$(netns "$node")" 2>/dev/null || true
        ip link del "$LAB-$node" 2>/dev/null || true
    done
    iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT -m comment --comment "$LAB" \
        2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$STATE" "$DATA"
    log "down: nothing of $LAB is left"
}

command=${1:-}
shift || true
case $command in
up) up "$@" ;;
down) down ;;
front) front "$@" ;;
kill) kill_node "$1" ;;
revive) revive_node "$1" ;;
docker) node_docker "$@" ;;
address) address "$1" ;;
nodes) nodes ;;
*) die "usage: $me up [IMAGE...] | down | front PORT SERVICE IMAGE | kill NODE | revive NODE |
    docker NODE ... | address NODE | nodes" ;;
esac
