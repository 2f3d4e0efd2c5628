package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/e2e/cluster"
)

// TestZZDownLeavesNothing runs last (files and tests run in source order):
// `trellis-dev down` must leave no network namespace, link, nftables table,
// /etc/netns entry or process of the cluster behind, and a second down is a
// harmless no-op.
func TestZZDownLeavesNothing(t *testing.T) {
	rootOnly(t)
	start := time.Now()
	out, err := dev("down")
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	t.Logf("down in %s: %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(out))
	ctx := context.Background()
	nss, err := cluster.Namespaces(ctx)
	if err != nil || len(nss) != 0 {
		t.Errorf("network namespaces left: %v (%v)", nss, err)
	}
	links, err := cluster.Links(ctx)
	if err != nil || len(links) != 0 {
		t.Errorf("links left: %v (%v)", links, err)
	}
	tables, err := cluster.NftTables(ctx)
	if err != nil {
		t.Errorf("nft list tables: %v", err)
	}
	for _, tb := range tables {
		if strings.Contains(tb, "kube-proxy") {
			t.Errorf("nftables table left in the root namespace: %s", tb)
		}
	}
	if ps := cluster.Processes(state); len(ps) != 0 {
		t.Errorf("cluster processes left: %v", ps)
	}
	if st, _ := cluster.ReadStatus(state); st.Alive() {
		t.Errorf("supervisor %d still alive", st.PID)
	}
	out, err = dev("down")
	if err != nil || !strings.Contains(out, "nothing to remove") {
		t.Errorf("second down: %v %q, want a no-op", err, out)
	}
}
