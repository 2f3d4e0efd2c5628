package traffic

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

const topLong = `Show the busiest source→destination pairs in the mesh, refreshed every
interval until interrupted (--once prints one interval and exits).

A source is the client's identity (its ServiceAccount, sa/NAMESPACE/NAME)
and the meshed Service its pod backs, if any; a destination is the meshed
Service it called. Rates, success and latency are computed as in stat
(SUCCESS leaves out requests the proxy refused by policy; -o wide shows
them as DENIED). With -n, pairs whose source or destination is in the
namespace are shown; with -A, all.

The proxies' latency histogram is labelled by source Service, not by
ServiceAccount: when two identities share a source Service (or are
client-only pods of one namespace), their latency cannot be told apart and
is marked with *.`

func topCmd(env *clienv.Env, d deps) *cobra.Command {
	var (
		all      bool
		once     bool
		interval time.Duration
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "The busiest source→destination pairs, refreshed live",
		Long:  topLong,
		Example: `  kubectl trellis top -n shop
  kubectl trellis top -A --limit 20 --interval 5s
  kubectl trellis top -n shop --once -o json`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if limit < 1 {
				return clienv.Usagef("--limit %d: must be at least 1", limit)
			}
			return checkInterval(interval)
		},
	}
	out := clienv.OutputFlag(cmd, clienv.Table, clienv.Wide, clienv.JSON, clienv.YAML)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().BoolVar(&once, "once", false, "print one interval and exit")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval (and the window rates are computed over)")
	cmd.Flags().IntVar(&limit, "limit", 10, "show at most this many pairs")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ns, _, err := env.Namespace()
		if err != nil {
			return err
		}
		if _, err := env.Kube(); err != nil {
			return err
		}
		s := &sampler{env: env, deps: d, interval: interval, watch: !once}
		return s.run(cmd.Context(), func(w *window, first bool) error {
			rows, more := topRows(w, ns, all, limit)
			return printTop(env, *out, ns, all, interval, w, rows, more, first)
		})
	}
	return cmd
}

type pairRow struct {
	SourceNamespace      string `json:"sourceNamespace,omitempty"`
	SourceServiceAccount string `json:"sourceServiceAccount,omitempty"`
	SourceService        string `json:"sourceService,omitempty"`
	DestinationNamespace string `json:"destinationNamespace"`
	DestinationService   string `json:"destinationService"`
	figures
	// LatencyShared: the latency also covers other identities of the same
	// source Service (see top --help).
	LatencyShared bool `json:"latencyShared,omitempty"`
}

type topOutput struct {
	Interval    string    `json:"interval"`
	ProxiesRead int       `json:"proxiesRead"`
	Pairs       []pairRow `json:"pairs"`
	// More is how many busy pairs --limit left out.
	More int `json:"more,omitempty"`
}

func topRows(w *window, ns string, all bool, limit int) ([]pairRow, int) {
	m := byPair(w)
	var rows []pairRow
	more := 0
	for _, p := range sortedPairs(m) {
		if !all && p.SrcNS != ns && p.DstNS != ns {
			continue
		}
		if len(rows) == limit {
			more++
			continue
		}
		t := m[p]
		rows = append(rows, pairRow{SourceNamespace: p.SrcNS, SourceServiceAccount: p.SrcSA, SourceService: p.SrcSvc,
			DestinationNamespace: p.DstNS, DestinationService: p.DstSvc, figures: t.figures(), LatencyShared: t.shared})
	}
	return rows, more
}

func (r pairRow) source() string {
	if r.SourceServiceAccount == "" {
		return "unidentified"
	}
	return "sa/" + r.SourceNamespace + "/" + r.SourceServiceAccount
}

func printTop(env *clienv.Env, format, ns string, all bool, interval time.Duration, w *window, rows []pairRow, more int, first bool) error {
	o := env.IO.Out
	if format == clienv.JSON || format == clienv.YAML {
		if rows == nil {
			rows = []pairRow{}
		}
		return printDoc(o, format, topOutput{Interval: interval.String(), ProxiesRead: w.Read, Pairs: rows, More: more}, first)
	}
	if !first {
		fmt.Fprintln(o)
	}
	if len(rows) == 0 {
		where := "to or from namespace " + ns
		if all {
			where = "in the mesh"
		}
		fmt.Fprintf(o, "No traffic %s in the last %s.\n", where, interval)
		return nil
	}
	t := clienv.NewTable(o)
	hdr := []string{"SOURCE", "SOURCE_SERVICE", "DESTINATION", "RPS", "SUCCESS", "LATENCY_P99"}
	if format == clienv.Wide {
		hdr = append(hdr, "LATENCY_P50", "LATENCY_P95", "DENIED", "RATE_LIMITED")
	}
	t.Row(hdr...)
	shared := false
	for _, r := range rows {
		mark := ""
		if r.LatencyShared {
			mark, shared = "*", true
		}
		p99 := ms(r.LatencyMs.P99)
		if p99 != "" {
			p99 += mark
		}
		cells := []string{r.source(), r.SourceService, r.DestinationNamespace + "/" + r.DestinationService, rps(r.RPS, false), pct(r.SuccessRate), p99}
		if format == clienv.Wide {
			p50, p95 := ms(r.LatencyMs.P50), ms(r.LatencyMs.P95)
			if p50 != "" {
				p50 += mark
			}
			if p95 != "" {
				p95 += mark
			}
			cells = append(cells, p50, p95, pct(r.DeniedShare), pct(r.RateLimitedShare))
		}
		t.Row(cells...)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if more > 0 {
		fmt.Fprintf(o, "(%d more; raise --limit to see them)\n", more)
	}
	if shared {
		fmt.Fprintln(o, "* latency shared with other identities of the same source Service (the proxy's histogram has no ServiceAccount label)")
	}
	return nil
}
