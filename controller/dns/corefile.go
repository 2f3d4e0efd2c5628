package dns

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The markers around the block Trellis owns in the Corefile.
const (
	BeginMarker = "# BEGIN trellis-mesh: managed by trellis-controller, removed by `trellis-controller uninstall`; do not edit"
	EndMarker   = "# END trellis-mesh"
)

// UnsupportedError explains why the Corefile cannot be patched safely.
type UnsupportedError struct{ Reason string }

func (e *UnsupportedError) Error() string { return "CoreDNS integration not possible: " + e.Reason }

// Block is the stub-domain server block forwarding the mesh domains to
// upstream (the DNS Service's cluster IP, with an optional :port).
func Block(domains []string, upstream string) string {
	var b strings.Builder
	b.WriteString(BeginMarker + "\n")
	for i, d := range domains {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(d + ":53")
	}
	b.WriteString(" {\n    errors\n    cache 5\n    forward . " + upstream + "\n}\n")
	b.WriteString(EndMarker + "\n")
	return b.String()
}

// span finds the marked block: start and end byte offsets (end past the
// end marker's line), or -1 when absent.
func span(corefile string) (int, int, error) {
	start := strings.Index(corefile, BeginMarker)
	endIdx := strings.Index(corefile, EndMarker)
	switch {
	case start < 0 && endIdx < 0:
		return -1, -1, nil
	case start < 0 || endIdx < 0 || endIdx < start:
		return 0, 0, &UnsupportedError{Reason: "the Corefile has only one of the trellis-mesh markers (edited by hand?); restore or remove the block between them"}
	case strings.Count(corefile, BeginMarker) > 1:
		return 0, 0, &UnsupportedError{Reason: "the Corefile has the trellis-mesh block twice; remove one"}
	}
	end := endIdx + len(EndMarker)
	if end < len(corefile) && corefile[end] == '\n' {
		end++
	}
	return start, end, nil
}

// serverKeys lists the zones of top-level server blocks outside the
// Trellis block, with their line numbers.
func serverKeys(corefile string) map[string]int {
	keys := map[string]int{}
	depth := 0
	for i, line := range strings.Split(corefile, "\n") {
		l := line
		if c := strings.Index(l, "#"); c >= 0 {
			l = l[:c]
		}
		l = strings.TrimSpace(l)
		if depth == 0 && strings.HasSuffix(l, "{") {
			for _, k := range strings.Fields(strings.TrimSuffix(l, "{")) {
				k = strings.TrimPrefix(k, "dns://")
				if h, _, ok := strings.Cut(k, ":"); ok {
					k = h
				}
				k = strings.ToLower(k)
				if k != "." {
					k = strings.TrimSuffix(k, ".")
				}
				keys[k] = i + 1
			}
		}
		depth += strings.Count(l, "{") - strings.Count(l, "}")
	}
	return keys
}

// Apply returns corefile with block in place: appended when absent,
// replaced when different, unchanged when equal. It refuses Corefiles it
// cannot patch safely, saying why.
func Apply(corefile, block string, domains []string) (string, bool, error) {
	start, end, err := span(corefile)
	if err != nil {
		return "", false, err
	}
	outside := corefile
	if start >= 0 {
		if corefile[start:end] == block {
			return corefile, false, nil
		}
		outside = corefile[:start] + corefile[end:]
	}
	keys := serverKeys(outside)
	if _, ok := keys["."]; !ok {
		return "", false, &UnsupportedError{Reason: "the Corefile has no root server block (.:53); it is not the kubeadm-style CoreDNS setup Trellis knows how to extend. Forward the mesh domains to the trellis-dns Service yourself (see docs/controller.md)"}
	}
	for _, d := range domains {
		if line, ok := keys[d]; ok {
			return "", false, &UnsupportedError{Reason: fmt.Sprintf("the Corefile already has a server block for %q (line %d) that Trellis does not manage; remove it or choose another meshDomain", d, line)}
		}
	}
	if start >= 0 {
		return corefile[:start] + block + corefile[end:], true, nil
	}
	if corefile != "" && !strings.HasSuffix(corefile, "\n") {
		corefile += "\n"
	}
	return corefile + block, true, nil
}

// Remove returns corefile without the Trellis block.
func Remove(corefile string) (string, bool, error) {
	start, end, err := span(corefile)
	if err != nil {
		return "", false, err
	}
	if start < 0 {
		return corefile, false, nil
	}
	return corefile[:start] + corefile[end:], true, nil
}

// CoreDNS edits the Corefile ConfigMap.
type CoreDNS struct {
	Client    kubernetes.Interface
	Namespace string
	ConfigMap string
	Key       string
}

// Ensure puts block into the Corefile; changed says whether it wrote.
func (c *CoreDNS) Ensure(ctx context.Context, domains []string, upstream string) (bool, error) {
	return c.edit(ctx, func(cf string) (string, bool, error) { return Apply(cf, Block(domains, upstream), domains) })
}

// Uninstall removes the block.
func (c *CoreDNS) Uninstall(ctx context.Context) (bool, error) {
	return c.edit(ctx, Remove)
}

func (c *CoreDNS) edit(ctx context.Context, f func(string) (string, bool, error)) (bool, error) {
	ref := c.Namespace + "/" + c.ConfigMap
	cm, err := c.Client.CoreV1().ConfigMaps(c.Namespace).Get(ctx, c.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, &UnsupportedError{Reason: fmt.Sprintf("ConfigMap %s not found: the cluster does not run kubeadm-style CoreDNS. Forward the mesh domains to the trellis-dns Service in your DNS setup, or set coreDNS.enabled: false", ref)}
	}
	if err != nil {
		return false, fmt.Errorf("get ConfigMap %s: %w", ref, err)
	}
	cur, ok := cm.Data[c.Key]
	if !ok {
		return false, &UnsupportedError{Reason: fmt.Sprintf("ConfigMap %s has no key %q", ref, c.Key)}
	}
	next, changed, err := f(cur)
	if err != nil || !changed {
		return false, err
	}
	cm = cm.DeepCopy()
	cm.Data[c.Key] = next
	// Update carries the resourceVersion: a concurrent edit fails with a
	// conflict instead of being overwritten; the caller retries.
	if _, err := c.Client.CoreV1().ConfigMaps(c.Namespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: "trellis-controller"}); err != nil {
		return false, fmt.Errorf("update ConfigMap %s: %w", ref, err)
	}
	return true, nil
}
