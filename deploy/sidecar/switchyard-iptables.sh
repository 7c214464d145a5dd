#!/bin/sh
# Installs or removes the iptables rules that send a pod's TCP traffic
# through its Switchyard sidecar. Run it as root (in Kubernetes: an init
# container with NET_ADMIN and NET_RAW) in the pod's network namespace.
#
#   switchyard-iptables.sh install [options]
#   switchyard-iptables.sh remove
#
# Options (environment variables of the same meaning in brackets):
#   --proxy-uid UID            the proxy's uid; its own connections are never
#                              redirected, or they would loop [SWITCHYARD_PROXY_UID, 2102]
#   --outbound-port PORT       the proxy's --outbound port [SWITCHYARD_OUTBOUND_PORT, 15001]
#   --inbound-port PORT        the proxy's --inbound port [SWITCHYARD_INBOUND_PORT, 15006]
#   --inbound-ports LIST       comma-separated ports of the application whose
#                              incoming connections go through the proxy; empty:
#                              no inbound interception [SWITCHYARD_INBOUND_PORTS, ""]
#   --exclude-outbound-ports LIST
#                              destination ports never redirected outbound
#                              [SWITCHYARD_EXCLUDE_OUTBOUND_PORTS, ""]
#   --exclude-outbound-cidrs LIST
#                              destination ranges never redirected outbound
#                              [SWITCHYARD_EXCLUDE_OUTBOUND_CIDRS, ""]
#
# What it installs, in the nat table (IPv4):
#   OUTPUT     -> SWITCHYARD_OUTPUT: RETURN for the proxy's uid, for
#                 127.0.0.1/32 (loopback to itself), for excluded ports and
#                 ranges; everything else is REDIRECTed to the outbound port.
#   PREROUTING -> SWITCHYARD_INBOUND: the --inbound-ports are REDIRECTed to
#                 the inbound port; everything else is left alone (so the
#                 kubelet's probes of the proxy's admin port are untouched).
# `remove` deletes exactly those jumps and chains, and succeeds when they
# are already gone. `install` removes first, so running it twice is safe.
set -eu

PROXY_UID="${SWITCHYARD_PROXY_UID:-2102}"
OUTBOUND_PORT="${SWITCHYARD_OUTBOUND_PORT:-15001}"
INBOUND_PORT="${SWITCHYARD_INBOUND_PORT:-15006}"
INBOUND_PORTS="${SWITCHYARD_INBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_PORTS="${SWITCHYARD_EXCLUDE_OUTBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_CIDRS="${SWITCHYARD_EXCLUDE_OUTBOUND_CIDRS:-}"
IPTABLES="${IPTABLES:-iptables}"

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

fail() {
    echo "switchyard-iptables: $*" >&2
    exit 64
}

is_port() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

check_ports() {
    # $1: option name, $2: comma-separated ports (may be empty)
    old_ifs=$IFS
    IFS=,
    for port in $2; do
        is_port "$port" || fail "$1: \"$port\" is not a port (1-65535)"
    done
    IFS=$old_ifs
}

remove() {
    # Jumps first (a chain in use cannot be deleted), each as often as it
    # appears, then the chains.
    while "$IPTABLES" -t nat -D OUTPUT -p tcp -j SWITCHYARD_OUTPUT 2>/dev/null; do :; done
    while "$IPTABLES" -t nat -D PREROUTING -p tcp -j SWITCHYARD_INBOUND 2>/dev/null; do :; done
    for chain in SWITCHYARD_OUTPUT SWITCHYARD_INBOUND; do
        if "$IPTABLES" -t nat -L "$chain" -n >/dev/null 2>&1; then
            "$IPTABLES" -t nat -F "$chain"
            "$IPTABLES" -t nat -X "$chain"
        fi
    done
}

install() {
    remove
    "$IPTABLES" -t nat -N SWITCHYARD_OUTPUT
    "$IPTABLES" -t nat -A SWITCHYARD_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
    "$IPTABLES" -t nat -A SWITCHYARD_OUTPUT -d 127.0.0.1/32 -j RETURN
    old_ifs=$IFS
    IFS=,
    for port in $EXCLUDE_OUTBOUND_PORTS; do
        "$IPTABLES" -t nat -A SWITCHYARD_OUTPUT -p tcp --dport "$port" -j RETURN
    done
    for cidr in $EXCLUDE_OUTBOUND_CIDRS; do
        "$IPTABLES" -t nat -A SWITCHYARD_OUTPUT -d "$cidr" -j RETURN
    done
    IFS=$old_ifs
    "$IPTABLES" -t nat -A SWITCHYARD_OUTPUT -p tcp -j REDIRECT --to-ports "$OUTBOUND_PORT"
    "$IPTABLES" -t nat -A OUTPUT -p tcp -j SWITCHYARD_OUTPUT

    "$IPTABLES" -t nat -N SWITCHYARD_INBOUND
    IFS=,
    for port in $INBOUND_PORTS; do
        "$IPTABLES" -t nat -A SWITCHYARD_INBOUND -p tcp --dport "$port" -j REDIRECT --to-ports "$INBOUND_PORT"
    done
    IFS=$old_ifs
    "$IPTABLES" -t nat -A PREROUTING -p tcp -j SWITCHYARD_INBOUND
}

[ $# -ge 1 ] || usage
command="$1"
shift
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || fail "$1 needs a value"
    case "$1" in
        --proxy-uid) PROXY_UID="$2" ;;
        --outbound-port) OUTBOUND_PORT="$2" ;;
        --inbound-port) INBOUND_PORT="$2" ;;
        --inbound-ports) INBOUND_PORTS="$2" ;;
        --exclude-outbound-ports) EXCLUDE_OUTBOUND_PORTS="$2" ;;
        --exclude-outbound-cidrs) EXCLUDE_OUTBOUND_CIDRS="$2" ;;
        *) fail "unknown option $1" ;;
    esac
    shift 2
done

case "$PROXY_UID" in
    '' | *[!0-9]*) fail "--proxy-uid: \"$PROXY_UID\" is not a uid" ;;
esac
[ "$PROXY_UID" -ne 0 ] || fail "--proxy-uid 0: the proxy must not run as root (every root process would bypass it)"
is_port "$OUTBOUND_PORT" || fail "--outbound-port: \"$OUTBOUND_PORT\" is not a port (1-65535)"
is_port "$INBOUND_PORT" || fail "--inbound-port: \"$INBOUND_PORT\" is not a port (1-65535)"
check_ports --inbound-ports "$INBOUND_PORTS"
check_ports --exclude-outbound-ports "$EXCLUDE_OUTBOUND_PORTS"
command -v "$IPTABLES" >/dev/null 2>&1 || fail "$IPTABLES not found"

case "$command" in
    install)
        install
        echo "switchyard-iptables: installed (proxy uid $PROXY_UID, outbound -> $OUTBOUND_PORT, inbound ports [${INBOUND_PORTS}] -> $INBOUND_PORT)"
        ;;
    remove)
        remove
        echo "switchyard-iptables: removed"
        ;;
    *) usage ;;
esac
