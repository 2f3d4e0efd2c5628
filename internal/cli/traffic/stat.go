package traffic

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

const statLong = `Show live traffic of meshed Services: request rate, success rate and
latency quantiles, measured by the node proxies.

stat reads every node proxy's metrics twice, --interval apart (through the
apiserver: RBAC get pods/proxy in the mesh namespace), and reports what
happened in between, summed over all nodes:

  SUCCESS       share of responses that were not 5xx, among the requests the
                mesh's policy let through. Requests the proxy refused by
                policy (403 access denied, 429 rate limited) are not counted
                as failures of the Service; -o wide shows them as DENIED and
                RATE_LIMITED, shares of all requests. A 403 or 429 written by
                the application itself is a success like any non-5xx.
  RPS           requests per second, refused ones included.
  LATENCY_P*    50th/95th/99th percentile of the time from request received
                to response finished, estimated from the proxies' histogram
                buckets by linear interpolation (as histogram_quantile).
  CONN/S        TCP connections and UDP flows started per second (wide).
  PROXIES       node proxies that saw the Service's traffic (wide).

A Service without traffic in the interval shows "-".`

func statCmd(env *clienv.Env, d deps) *cobra.Command {
	var (
		all      bool
		watch    bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stat [SERVICE]",
		Short: "Live request rate, success rate and latency of meshed Services",
		Long:  statLong,
		Example: `  kubectl trellis stat -n shop
  kubectl trellis stat web -n shop --watch --interval 5s
  kubectl trellis stat -A -o wide`,
		Args: cobra.MaximumNArgs(1),
		PreRunE: func(_ *cobra.Command, args []string) error {
			if all && len(args) == 1 {
				return clienv.Usagef("stat %s: a SERVICE is looked up in one namespace; drop -A and pass -n", args[0])
			}
			return checkInterval(interval)
		},
	}
	out := clienv.OutputFlag(cmd, clienv.Table, clienv.Wide, clienv.JSON, clienv.YAML)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "print again every interval until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between the two scrapes a rate is computed from")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		kube, err := env.Kube()
		if err != nil {
			return err
		}
		ns, _, err := env.Namespace()
		if err != nil {
			return err
		}
		sc := statScope{ns: ns, all: all}
		if len(args) == 1 {
			sc.name = args[0]
			svc, err := kube.CoreV1().Services(ns).Get(ctx, sc.name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("service %s/%s not found", ns, sc.name), "list Services with kubectl get services -n "+ns)
			}
			if err != nil {
				return clienv.APIError(fmt.Sprintf("get Service %s/%s", ns, sc.name), err)
			}
			nsObj, _ := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}) // nil when not allowed: the annotation alone decides
			if m, why := isMeshed(svc, nsObj, env.MeshNamespace); !m {
				fmt.Fprintf(env.IO.ErrOut, "%s Service %s/%s is not in the mesh (%s), so the proxies see none of its traffic; to mesh it: kubectl trellis join %s -n %s\n",
					env.Warn(), ns, sc.name, why, sc.name, ns)
			}
		}
		s := &sampler{env: env, deps: d, interval: interval, watch: watch}
		return s.run(ctx, func(w *window, first bool) error {
			rows, err := statRows(ctx, kube, env.MeshNamespace, sc, w)
			if err != nil {
				return err
			}
			return printStat(env, *out, sc, interval, w, rows, first)
		})
	}
	return cmd
}

// statScope is what stat reports on.
type statScope struct {
	ns   string
	all  bool
	name string // one Service
}

func (s statScope) has(k svcKey) bool {
	switch {
	case s.all:
		return true
	case s.name != "":
		return k.NS == s.ns && k.Name == s.name
	}
	return k.NS == s.ns
}

type serviceRow struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Meshed    bool   `json:"meshed"`
	figures
	noTraffic bool
}

type statOutput struct {
	Interval    string       `json:"interval"`
	ProxiesRead int          `json:"proxiesRead"`
	Services    []serviceRow `json:"services"`
}

// isMeshed is annotations.Meshed plus the controller's rule that the mesh
// namespace itself is never meshed.
func isMeshed(svc *corev1.Service, ns *corev1.Namespace, meshNS string) (bool, string) {
	if svc.Namespace == meshNS {
		return false, fmt.Sprintf("namespace %s is the mesh's own namespace, which is never meshed", meshNS)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false, "ExternalName Services have no pods to route to"
	}
	m, why, _ := annotations.Meshed(svc, ns)
	return m, why
}

// statRows lists the meshed Services in scope with their figures from w,
// plus any other Service in scope that had traffic in w.
func statRows(ctx context.Context, kube kubernetes.Interface, meshNS string, sc statScope, w *window) ([]serviceRow, error) {
	listNS := sc.ns
	if sc.all {
		listNS = metav1.NamespaceAll
	}
	var svcs []corev1.Service
	if sc.name != "" {
		svc, err := kube.CoreV1().Services(sc.ns).Get(ctx, sc.name, metav1.GetOptions{})
		if err != nil {
			return nil, clienv.APIError(fmt.Sprintf("get Service %s/%s", sc.ns, sc.name), err)
		}
		svcs = []corev1.Service{*svc}
	} else {
		list, err := kube.CoreV1().Services(listNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, clienv.APIError("list Services", err)
		}
		svcs = list.Items
	}
	nss := namespaces(ctx, kube, sc)
	tallies := byService(w)
	seen := map[svcKey]bool{}
	var rows []serviceRow
	add := func(k svcKey, meshed bool) {
		seen[k] = true
		t := tallies[k]
		if t == nil {
			t = &tally{}
		}
		rows = append(rows, serviceRow{Namespace: k.NS, Service: k.Name, Meshed: meshed, figures: t.figures(), noTraffic: t.total == 0})
	}
	for i := range svcs {
		svc := &svcs[i]
		m, _ := isMeshed(svc, nss[svc.Namespace], meshNS)
		k := svcKey{svc.Namespace, svc.Name}
		if m || sc.name != "" || tallies[k] != nil {
			add(k, m)
		}
	}
	for k := range tallies {
		if !seen[k] && sc.has(k) {
			add(k, false) // gone, or left the mesh during the interval
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Namespace != rows[j].Namespace {
			return rows[i].Namespace < rows[j].Namespace
		}
		return rows[i].Service < rows[j].Service
	})
	return rows, nil
}

// namespaces returns the Namespace objects in scope, for the mesh label.
// Reading namespaces is cluster-scoped RBAC many users lack; without it
// only the Service annotation decides, as a nil namespace means to
// annotations.Meshed.
func namespaces(ctx context.Context, kube kubernetes.Interface, sc statScope) map[string]*corev1.Namespace {
	out := map[string]*corev1.Namespace{}
	if sc.all {
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err == nil {
			for i := range list.Items {
				out[list.Items[i].Name] = &list.Items[i]
			}
		}
		return out
	}
	if n, err := kube.CoreV1().Namespaces().Get(ctx, sc.ns, metav1.GetOptions{}); err == nil {
		out[sc.ns] = n
	}
	return out
}

func printStat(env *clienv.Env, format string, sc statScope, interval time.Duration, w *window, rows []serviceRow, first bool) error {
	o := env.IO.Out
	if format == clienv.JSON || format == clienv.YAML {
		if rows == nil {
			rows = []serviceRow{}
		}
		return printDoc(o, format, statOutput{Interval: interval.String(), ProxiesRead: w.Read, Services: rows}, first)
	}
	if !first {
		fmt.Fprintln(o)
	}
	if len(rows) == 0 {
		where := "in namespace " + sc.ns
		if sc.all {
			where = "in any namespace"
		}
		fmt.Fprintf(env.IO.ErrOut, "No meshed Services %s.\n", where)
		return nil
	}
	t := clienv.NewTable(o)
	hdr := []string{"SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"}
	if format == clienv.Wide {
		hdr = append(hdr, "DENIED", "RATE_LIMITED", "CONN/S", "PROXIES")
	}
	if sc.all {
		hdr = append([]string{"NAMESPACE"}, hdr...)
	}
	t.Row(hdr...)
	for _, r := range rows {
		cells := []string{r.Service, pct(r.SuccessRate), rps(r.RPS, r.noTraffic), ms(r.LatencyMs.P50), ms(r.LatencyMs.P95), ms(r.LatencyMs.P99)}
		if format == clienv.Wide {
			conn := ""
			if r.ConnsPerSecond > 0 {
				conn = strconv.FormatFloat(r.ConnsPerSecond, 'f', 2, 64)
			}
			cells = append(cells, pct(r.DeniedShare), pct(r.RateLimitedShare), conn, strconv.Itoa(r.Proxies))
		}
		if sc.all {
			cells = append([]string{r.Namespace}, cells...)
		}
		t.Row(cells...)
	}
	return t.Flush()
}

// pct prints a share as a percentage; nil prints "-".
func pct(v *float64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatFloat(*v*100, 'f', 2, 64) + "%"
}

func rps(v float64, none bool) string {
	if none {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// ms prints a latency given in milliseconds: 0.75ms, 2.5ms, 120ms, 1.25s.
func ms(v *float64) string {
	if v == nil {
		return ""
	}
	switch x := *v; {
	case x < 10:
		return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(x, 'f', 2, 64), "0"), ".") + "ms"
	case x < 1000:
		return strconv.FormatFloat(x, 'f', 0, 64) + "ms"
	default:
		return strings.TrimSuffix(strings.TrimRight(strconv.FormatFloat(x/1000, 'f', 2, 64), "0"), ".") + "s"
	}
}
