package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The address plan. 198.18.0.0/15 (RFC 2544) is no one's network.
const (
	prefix       = "trl"           // every netns, link and folder this package makes starts with it
	bridgeName   = "trl0"          // root-namespace bridge joining the nodes
	apiserverIP  = "198.18.0.1"    // the bridge's address; the apiserver binds it
	bridgeCIDR   = "198.18.0.1/24" // the node network
	podSupernet  = "198.19.0.0/16" // node N's pods live in 198.19.N.0/24
	serviceCIDR  = "10.96.0.0/16"  // ClusterIPs
	kubeAPIVIP   = "10.96.0.1"     // the kubernetes Service
	dnsServiceIP = "10.96.0.10"    // kube-dns
	clusterZone  = "cluster.local" // cluster DNS domain
	maxNodes     = 200             // node IPs are 198.18.0.11 ... .210
	nodeNetnsFmt = prefix + "-node-%d"
)

// node is one node of the cluster: a network namespace on the bridge.
type node struct {
	Index int
	Name  string // Node object name, node-1 ...
	Netns string
	IP    string
	Zone  string
}

func newNode(i int) node {
	return node{
		Index: i,
		Name:  fmt.Sprintf("node-%d", i),
		Netns: fmt.Sprintf(nodeNetnsFmt, i),
		IP:    fmt.Sprintf("198.18.0.%d", 10+i),
		Zone:  fmt.Sprintf("zone-%c", 'a'+rune((i-1)%2)),
	}
}

// PodCIDR is the node's pod range.
func (n node) PodCIDR() string { return fmt.Sprintf("198.19.%d.0/24", n.Index) }

// Gateway is the address pods use as their next hop; it sits on every pod
// veth of the node.
func (n node) Gateway() string { return fmt.Sprintf("198.19.%d.1", n.Index) }

// PodIP is the address of the pod in slot s (2..254).
func (n node) PodIP(s int) string { return fmt.Sprintf("198.19.%d.%d", n.Index, s) }

// setupBridge creates the root bridge. It fails with a clear message if the
// node network is already used by something else on this machine.
func setupBridge(ctx context.Context) error {
	if err := addressFree(bridgeCIDR); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", bridgeCIDR, "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// addressFree fails if any interface already has an address in cidr.
func addressFree(cidr string) error {
	_, want, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if ok && (want.Contains(ipn.IP) || ipn.Contains(want.IP)) {
				return fmt.Errorf("address %s on interface %s overlaps the cluster's node network %s: remove it or run `trellis-dev down` if it is a leftover", ipn, ifc.Name, cidr)
			}
		}
	}
	return nil
}

// setupNode creates the node's namespace, wires it to the bridge, turns on
// forwarding inside it and adds host-gw routes to the other nodes' pods.
func setupNode(ctx context.Context, n node, all []node) error {
	host := fmt.Sprintf("%sn%d", prefix, n.Index)
	cmds := [][]string{
		{"netns", "add", n.Netns},
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", n.Netns},
		{"link", "set", host, "master", bridgeName, "up"},
		{"-n", n.Netns, "addr", "add", n.IP + "/24", "dev", "eth0"},
		{"-n", n.Netns, "link", "set", "eth0", "up"},
		{"-n", n.Netns, "link", "set", "lo", "up"},
		{"-n", n.Netns, "route", "add", "default", "via", apiserverIP},
		{"route", "add", n.PodCIDR(), "via", n.IP},
	}
	for _, o := range all {
		if o.Index != n.Index {
			cmds = append(cmds, []string{"-n", n.Netns, "route", "add", o.PodCIDR(), "via", o.IP})
		}
	}
	for _, c := range cmds {
		if err := run(ctx, "ip", c...); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return sysctls(ctx, n.Netns, map[string]string{
		"net/ipv4/ip_forward":             "1",
		"net/ipv4/conf/all/rp_filter":     "0",
		"net/ipv4/conf/default/rp_filter": "0",
	})
}

// sysctls writes per-namespace sysctls inside netns (never the host's).
func sysctls(ctx context.Context, netns string, kv map[string]string) error {
	var script strings.Builder
	for k, v := range kv {
		fmt.Fprintf(&script, "echo %s > /proc/sys/%s && ", v, k)
	}
	script.WriteString("true")
	return run(ctx, "ip", "netns", "exec", netns, "sh", "-c", script.String())
}

// podNetns names a pod's namespace after its UID.
func podNetns(uid string) string { return prefix + "p-" + uid }

// podVeth names the node-side end of a pod's veth (at most 15 bytes).
func podVeth(uid string) string {
	h := sha256.Sum256([]byte(uid))
	return prefix + hex.EncodeToString(h[:])[:12]
}

// setupPodNetwork creates the pod's namespace and a routed veth to its node:
// the pod has ip/32 and a default route via the node's gateway address, and
// the node routes ip/32 to the veth. Every packet between pods, even on the
// same node, is routed through the node namespace, so kube-proxy sees both
// directions and source addresses are never rewritten.
func setupPodNetwork(ctx context.Context, n node, uid, ip string, dns resolvConf) error {
	ns, veth := podNetns(uid), podVeth(uid)
	cmds := [][]string{
		{"netns", "add", ns},
		{"-n", n.Netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", n.Netns, "addr", "add", n.Gateway() + "/32", "dev", veth},
		{"-n", n.Netns, "link", "set", veth, "up"},
		{"-n", n.Netns, "route", "add", ip + "/32", "dev", veth},
		{"-n", ns, "addr", "add", ip + "/32", "dev", "eth0"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", n.Gateway(), "dev", "eth0", "scope", "link"},
		{"-n", ns, "route", "add", "default", "via", n.Gateway(), "dev", "eth0"},
	}
	for _, c := range cmds {
		if err := run(ctx, "ip", c...); err != nil {
			_ = teardownPodNetwork(ctx, uid)
			return err
		}
	}
	return writeResolvConf(ns, dns)
}

// teardownPodNetwork kills whatever still runs in the pod's namespace and
// deletes it (its veth goes with it).
func teardownPodNetwork(ctx context.Context, uid string) error {
	ns := podNetns(uid)
	killNetns(ctx, ns)
	_ = os.RemoveAll(filepath.Join("/etc/netns", ns))
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); os.IsNotExist(err) {
		return nil
	}
	return run(ctx, "ip", "netns", "del", ns)
}

// resolvConf is what a pod's /etc/resolv.conf says; empty Nameserver means
// the host's file is used (dnsPolicy Default).
type resolvConf struct {
	Nameserver string
	Search     []string
}

func writeResolvConf(ns string, r resolvConf) error {
	if r.Nameserver == "" {
		return nil
	}
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	body := fmt.Sprintf("search %s\nnameserver %s\noptions ndots:5\n", strings.Join(r.Search, " "), r.Nameserver)
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(body), 0o644)
}

// killNetns kills every process inside a network namespace.
func killNetns(ctx context.Context, ns string) {
	out, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
