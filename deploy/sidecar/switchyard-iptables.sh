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
#                              (IPv4 ranges go to iptables, IPv6 to ip6tables)
#                              [SWITCHYARD_EXCLUDE_OUTBOUND_CIDRS, ""]
#   --ipv6 on|off              the same rules for IPv6 with ip6tables (loopback
#                              ::1/128); the proxy then needs --outbound
#                              [::]:PORT and --inbound [::]:PORT listeners too
#                              [SWITCHYARD_IPV6, off]
#
# What it installs, in the nat table (IPv4, and IPv6 with --ipv6 on):
#   OUTPUT     -> SWITCHYARD_OUTPUT: RETURN for the proxy's uid, for
#                 127.0.0.1/32 or ::1/128 (loopback to itself), for excluded ports and
#                 ranges; everything else is REDIRECTed to the outbound port.
#   PREROUTING -> SWITCHYARD_INBOUND: the --inbound-ports are REDIRECTed to
#                 the inbound port; everything else is left alone (so the
#                 kubelet's probes of the proxy's admin port are untouched).
# `remove` deletes exactly those jumps and chains (IPv6 too, whenever
# ip6tables is there), and succeeds when they are already gone. `install`
# removes first, so running it twice is safe.
set -eu

PROXY_UID="${SWITCHYARD_PROXY_UID:-2102}"
OUTBOUND_PORT="${SWITCHYARD_OUTBOUND_PORT:-15001}"
INBOUND_PORT="${SWITCHYARD_INBOUND_PORT:-15006}"
INBOUND_PORTS="${SWITCHYARD_INBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_PORTS="${SWITCHYARD_EXCLUDE_OUTBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_CIDRS="${SWITCHYARD_EXCLUDE_OUTBOUND_CIDRS:-}"
IPV6="${SWITCHYARD_IPV6:-off}"
IPTABLES="${IPTABLES:-iptables}"
IP6TABLES="${IP6TABLES:-ip6tables}"

usage() {
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
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

# $1: iptables or ip6tables
remove_family() {
    tables="$1"
    # Jumps first (a chain in use cannot be deleted), each as often as it
    # appears, then the chains.
    while "$tables" -t nat -D OUTPUT -p tcp -j SWITCHYARD_OUTPUT 2>/dev/null; do :; done
    while "$tables" -t nat -D PREROUTING -p tcp -j SWITCHYARD_INBOUND 2>/dev/null; do :; done
    for chain in SWITCHYARD_OUTPUT SWITCHYARD_INBOUND; do
        if "$tables" -t nat -L "$chain" -n >/dev/null 2>&1; then
            "$tables" -t nat -F "$chain"
            "$tables" -t nat -X "$chain"
        fi
    done
}

remove() {
    remove_family "$IPTABLES"
    if command -v "$IP6TABLES" >/dev/null 2>&1; then
        remove_family "$IP6TABLES"
    fi
}

# $1: iptables or ip6tables, $2: the loopback address of that family
install_family() {
    tables="$1"
    loopback="$2"
    "$tables" -t nat -N SWITCHYARD_OUTPUT
    "$tables" -t nat -A SWITCHYARD_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
    "$tables" -t nat -A SWITCHYARD_OUTPUT -d "$loopback" -j RETURN
    old_ifs=$IFS
    IFS=,
    for port in $EXCLUDE_OUTBOUND_PORTS; do
        "$tables" -t nat -A SWITCHYARD_OUTPUT -p tcp --dport "$port" -j RETURN
    done
    for cidr in $EXCLUDE_OUTBOUND_CIDRS; do
        # Each range goes to the family it belongs to.
        case "$cidr:$tables" in
            *:*:ip6tables | *.*:iptables) "$tables" -t nat -A SWITCHYARD_OUTPUT -d "$cidr" -j RETURN ;;
        esac
    done
    IFS=$old_ifs
    "$tables" -t nat -A SWITCHYARD_OUTPUT -p tcp -j REDIRECT --to-ports "$OUTBOUND_PORT"
    "$tables" -t nat -A OUTPUT -p tcp -j SWITCHYARD_OUTPUT

    "$tables" -t nat -N SWITCHYARD_INBOUND
    IFS=,
    for port in $INBOUND_PORTS; do
        "$tables" -t nat -A SWITCHYARD_INBOUND -p tcp --dport "$port" -j REDIRECT --to-ports "$INBOUND_PORT"
    done
    IFS=$old_ifs
    "$tables" -t nat -A PREROUTING -p tcp -j SWITCHYARD_INBOUND
}

install() {
    remove
    install_family "$IPTABLES" 127.0.0.1/32
    if [ "$IPV6" = on ]; then
        install_family "$IP6TABLES" ::1/128
    fi
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
        --ipv6) IPV6="$2" ;;
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
case "$IPV6" in
    on | off) ;;
    *) fail "--ipv6: \"$IPV6\" is not on or off" ;;
esac
command -v "$IPTABLES" >/dev/null 2>&1 || fail "$IPTABLES not found"
if [ "$IPV6" = on ]; then
    command -v "$IP6TABLES" >/dev/null 2>&1 || fail "--ipv6 on: $IP6TABLES not found"
fi

case "$command" in
    install)
        install
        echo "switchyard-iptables: installed (proxy uid $PROXY_UID, outbound -> $OUTBOUND_PORT, inbound ports [${INBOUND_PORTS}] -> $INBOUND_PORT, IPv6 $IPV6)"
        ;;
    remove)
        remove
        echo "switchyard-iptables: removed"
        ;;
    *) usage ;;
esac
