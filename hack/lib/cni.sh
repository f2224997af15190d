# shellcheck shell=bash
# A private CNI bridge network for a test run (sourced by hack/containerd.sh and the CRI
# harnesses): Debian's containernetworking-plugins (bridge + host-local + portmap), a bridge
# named hcXXXXXX, pods in a 10.233.N.0/24 no other route on this machine uses, IPAM state
# under the given dir. Nothing leaves this machine: no masquerade, no default route beyond
# the bridge.
#
#   cni_bridge DIR [GATEWAY]   writes DIR/cni/10-husk-bridge.conflist and DIR/cni-bridge (the
#                              bridge's name); GATEWAY=true gives the bridge the subnet's first
#                              address and makes it the pods' default gateway (pod-to-host
#                              traffic and hostPort from the node's addresses need that)
#   cni_bridge_remove DIR      deletes the bridge (the plugins never do) and the IPAM state

cni_free_subnet() {
    local n routes
    routes=$(ip -4 route show 2>/dev/null)
    for _ in $(seq 1 50); do
        n=$((RANDOM % 250))
        [[ $routes == *"10.233.$n."* ]] || { echo "10.233.$n.0/24"; return 0; }
    done
    echo "cni_free_subnet: no free 10.233.N.0/24" >&2
    return 1
}

cni_bridge() {
    local dir=$1 gateway=${2:-false} br subnet
    br=hc$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    subnet=$(cni_free_subnet) || return 1
    mkdir -p "$dir/cni"
    echo "$br" >"$dir/cni-bridge"
    cat >"$dir/cni/10-husk-bridge.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "husk-$br",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$br",
      "isGateway": $gateway,
      "isDefaultGateway": $gateway,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet"}]],
        "dataDir": "$dir/cni-ipam"
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
CNI
}

cni_bridge_remove() {
    local dir=$1
    if [ -f "$dir/cni-bridge" ]; then
        ip link del "$(cat "$dir/cni-bridge")" 2>/dev/null || true
        rm -f "$dir/cni-bridge"
    fi
    rm -rf "$dir/cni-ipam"
}
