package inspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/version"

	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	trellisversion "github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi"
)

// minKubeMinor is the oldest Kubernetes 1.x Trellis supports.
const minKubeMinor = 30

// Check outcomes.
const (
	passed  = "passed"
	failed  = "failed"
	warning = "warning"
	skipped = "skipped"
)

// checkResult is one line of check's report.
type checkResult struct {
	// ID names the check for scripts (the title says what was found).
	ID      string   `json:"id"`
	Section string   `json:"section"`
	Check   string   `json:"check"`
	Status  string   `json:"status"`
	Detail  []string `json:"detail,omitempty"`
	Hint    string   `json:"hint,omitempty"`
	// Reason says why a check was skipped.
	Reason string `json:"reason,omitempty"`
	title  string // before the check said what it found
}

// outcome is what a check function decides; Check, when set, replaces the
// check's title (to say what was found).
type outcome struct {
	Status string
	Check  string
	Detail []string
	Hint   string
	Reason string
}

func pass(title string) outcome { return outcome{Status: passed, Check: title} }

// checkReport is the JSON form of check's output.
type checkReport struct {
	Checks   []checkResult `json:"checks"`
	Passed   int           `json:"passed"`
	Failed   int           `json:"failed"`
	Warnings int           `json:"warnings"`
	Skipped  int           `json:"skipped"`
	Success  bool          `json:"success"`
}

type checker struct {
	env     *clienv.Env
	format  string
	out     io.Writer
	results []checkResult
	section string
}

// run runs one check unless a check it needs did not pass; a skipped
// check says which one and why.
func (c *checker) run(id, section, title string, needs []string, f func() outcome) {
	r := checkResult{ID: id, title: title, Section: section, Check: title}
	for _, n := range needs {
		dep := c.find(n)
		if dep == nil || dep.Status == passed || dep.Status == warning {
			continue
		}
		r.Status = skipped
		if dep.Status == skipped {
			r.Reason = dep.Reason
		} else {
			r.Reason = fmt.Sprintf("%q failed", dep.title)
		}
		break
	}
	if r.Status == "" {
		o := f()
		r.Status, r.Detail, r.Hint, r.Reason = o.Status, o.Detail, o.Hint, o.Reason
		if o.Check != "" {
			r.Check = o.Check
		}
	}
	c.results = append(c.results, r)
	if c.format == clienv.Table {
		c.print(r)
	}
}

func (c *checker) find(id string) *checkResult {
	for i := range c.results {
		if c.results[i].ID == id {
			return &c.results[i]
		}
	}
	return nil
}

func (c *checker) ok(id string) bool {
	r := c.find(id)
	return r != nil && (r.Status == passed || r.Status == warning)
}

func (c *checker) print(r checkResult) {
	if r.Section != c.section {
		if c.section != "" {
			fmt.Fprintln(c.out)
		}
		c.section = r.Section
		fmt.Fprintln(c.out, r.Section)
		fmt.Fprintln(c.out, strings.Repeat("-", len([]rune(r.Section))))
	}
	switch r.Status {
	case passed:
		fmt.Fprintf(c.out, "%s %s\n", c.env.Mark(true), r.Check)
	case failed:
		fmt.Fprintf(c.out, "%s %s\n", c.env.Mark(false), r.Check)
	case warning:
		fmt.Fprintf(c.out, "%s %s\n", c.env.Warn(), r.Check)
	case skipped:
		fmt.Fprintf(c.out, "- %s (skipped: %s)\n", r.Check, r.Reason)
	}
	for _, d := range r.Detail {
		fmt.Fprintf(c.out, "    %s\n", d)
	}
	if r.Hint != "" {
		fmt.Fprintf(c.out, "    hint: %s\n", r.Hint)
	}
}

// finish prints the summary (or the JSON/YAML report) and returns the
// error that sets the exit code.
func (c *checker) finish(pre bool) error {
	rep := checkReport{Checks: c.results}
	for _, r := range c.results {
		switch r.Status {
		case passed:
			rep.Passed++
		case failed:
			rep.Failed++
		case warning:
			rep.Warnings++
		case skipped:
			rep.Skipped++
		}
	}
	rep.Success = rep.Failed == 0
	if c.format != clienv.Table {
		if err := clienv.PrintData(c.out, c.format, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(c.out)
		var parts []string
		if rep.Failed > 0 {
			parts = append(parts, fmt.Sprintf("%d failed", rep.Failed))
		}
		parts = append(parts, fmt.Sprintf("%d passed", rep.Passed+rep.Warnings))
		if rep.Warnings > 0 {
			parts = append(parts, fmt.Sprintf("%d with warnings", rep.Warnings))
		}
		if rep.Skipped > 0 {
			parts = append(parts, fmt.Sprintf("%d skipped", rep.Skipped))
		}
		what := "Trellis is healthy"
		if pre {
			what = "the cluster is ready for kubectl trellis install"
		}
		if rep.Failed > 0 {
			what = "Trellis is not healthy"
			if pre {
				what = "the cluster is not ready for Trellis"
			}
		}
		fmt.Fprintf(c.out, "%s %s: %s\n", c.env.Mark(rep.Success), what, strings.Join(parts, ", "))
	}
	if !rep.Success {
		return clienv.Fail(clienv.ExitCheck, fmt.Errorf("%d of %d checks failed", rep.Failed, len(rep.Checks)), "")
	}
	return nil
}

func checkCmd(env *clienv.Env, d deps) *cobra.Command {
	var pre bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Trellis and the cluster are healthy",
		Long: `check runs a list of checks and prints each as ✔ (passed), ✘ (failed, with
a hint) or ‼ (a warning): the Kubernetes API and its version, your RBAC, the
CRDs and the versions they serve, the controller and its leader, every proxy
and whether it serves the current config, the DNS integration, and the
problems the controller found in the mesh's objects. A check that depends on
a failed one is shown as skipped.

With --pre, only what installing needs is checked: the API, its version,
your RBAC for everything the install creates, and no conflicting install.

Exit codes: 0 all passed (warnings allowed), 3 a check failed, 6 Trellis is
not installed (without --pre).`,
		Example: `  kubectl trellis check --pre
  kubectl trellis check
  kubectl trellis check -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&pre, "pre", false, "check only what installing needs")
	format := clienv.OutputFlag(cmd, clienv.Table, clienv.JSON, clienv.YAML)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		s, err := newSession(env, d)
		if err != nil {
			return err
		}
		c := &checker{env: env, format: *format, out: env.IO.Out}
		err = runChecks(cmd.Context(), s, c, pre)
		if err != nil {
			return err
		}
		return c.finish(pre)
	}
	return cmd
}

func runChecks(ctx context.Context, s *session, c *checker, pre bool) error {
	const api, rbac, crdSection, ctrl, prox, dnsSection, cfg = "Kubernetes API", "RBAC", "CRDs", "Controller", "Proxies", "DNS", "Config"
	var sv *version.Info
	c.run("api", api, "Kubernetes API reachable", nil, func() outcome {
		v, err := s.kube.Discovery().ServerVersion()
		if err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}, Hint: "check --kubeconfig/--context and that the cluster is up"}
		}
		sv = v
		return pass("")
	})
	c.run("version", api, fmt.Sprintf("Kubernetes version supported (1.%d or newer)", minKubeMinor), []string{"api"}, func() outcome {
		return kubeVersion(sv)
	})
	if pre {
		c.run("install-rbac", rbac, "may install Trellis", []string{"api"}, func() outcome { return installRBAC(ctx, s) })
		c.run("conflict", "Existing installs", "no conflicting install", []string{"api"}, func() outcome { return conflicts(ctx, s) })
		c.run("crd-owners", "Existing installs", "the SMI CRDs are Trellis's or absent", []string{"api"}, func() outcome { return crdOwners(ctx, s) })
		return nil
	}

	c.run("rbac-read", rbac, fmt.Sprintf("may read the install in %s (deployments, daemonsets, pods, leases)", s.ns), []string{"api"}, func() outcome {
		return mayAll(ctx, s, []*authzv1.ResourceAttributes{
			{Namespace: s.ns, Verb: "get", Group: "apps", Resource: "deployments"},
			{Namespace: s.ns, Verb: "get", Group: "apps", Resource: "daemonsets"},
			{Namespace: s.ns, Verb: "list", Resource: "pods"},
			{Namespace: s.ns, Verb: "get", Group: "coordination.k8s.io", Resource: "leases"},
		})
	})
	c.run("rbac-crds", rbac, "may read CustomResourceDefinitions", []string{"api"}, func() outcome {
		return mayAll(ctx, s, []*authzv1.ResourceAttributes{{Verb: "list", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}})
	})
	c.run("rbac-proxy", rbac, fmt.Sprintf("may reach the controller and the proxies (get pods/proxy in %s)", s.ns), []string{"api"}, func() outcome {
		return mayAll(ctx, s, []*authzv1.ResourceAttributes{podsProxyAttrs(s.ns)})
	})
	c.run("rbac-debug", rbac, "may read the controller's debug API", []string{"api"}, func() outcome {
		return debugAccess(ctx, s)
	})

	var in *install
	if c.ok("rbac-read") {
		var err error
		if in, err = s.findInstall(ctx); err != nil {
			return err
		}
	}

	var served map[string]*apiextensionsv1.CustomResourceDefinition
	shipped, err := crds.Load()
	if err != nil {
		return err
	}
	for _, want := range shipped {
		c.run("crd-"+want.Name, crdSection, "CRD "+want.Name, []string{"rbac-crds"}, func() outcome {
			if served == nil {
				var err error
				if served, err = listCRDs(ctx, s); err != nil {
					return outcome{Status: failed, Detail: []string{err.Error()}}
				}
			}
			return crdServed(want, served[want.Name])
		})
	}

	c.run("controller", ctrl, fmt.Sprintf("controller Deployment %s/%s ready", s.ns, controllerName), []string{"rbac-read"}, func() outcome {
		return deploymentReady(in)
	})
	c.run("leader", ctrl, "leader elected", []string{"controller"}, func() outcome {
		ld := leaseLeader(in.lease, s.ns, s.d.now())
		if !ld.fresh {
			return outcome{Status: failed, Detail: []string{ld.why}, Hint: fmt.Sprintf("kubectl -n %s logs deployment/%s | grep -i leader", s.ns, controllerName)}
		}
		return pass(fmt.Sprintf("leader elected (%s)", ld.holder))
	})
	var st *controllerState
	var ctlPod *corev1.Pod
	c.run("debug", ctrl, "controller debug API answers", []string{"controller", "rbac-proxy", "rbac-debug"}, func() outcome {
		var err error
		if ctlPod, err = in.controllerPod(s.d.now()); err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}}
		}
		if st, err = s.state(ctx, in, ctlPod); err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}, Hint: hintOf(err)}
		}
		role := "not leading"
		if st.Leading {
			role = "leader"
		}
		return pass(fmt.Sprintf("controller debug API answers (%s, %s, Trellis %s)", ctlPod.Name, role, st.Version))
	})
	c.run("shadow", ctrl, "shadow Services written", []string{"debug", "leader"}, func() outcome {
		if !st.Leading {
			return outcome{Status: skipped, Reason: fmt.Sprintf("%s does not lead", ctlPod.Name)}
		}
		if st.ShadowErrors != "" {
			return outcome{Status: failed, Detail: []string{st.ShadowErrors}, Hint: fmt.Sprintf("kubectl -n %s logs %s", s.ns, ctlPod.Name)}
		}
		return pass("")
	})
	c.run("webhook", ctrl, "conversion webhook certificate in place", []string{"debug"}, func() outcome {
		if st.WebhookError != "" {
			return outcome{Status: failed, Detail: []string{st.WebhookError}, Hint: fmt.Sprintf("kubectl -n %s logs %s", s.ns, ctlPod.Name)}
		}
		return pass("")
	})

	c.run("daemonset", prox, fmt.Sprintf("proxy DaemonSet %s/%s ready on every node", s.ns, proxyName), []string{"rbac-read"}, func() outcome {
		return daemonSetReady(in)
	})
	var proxies []proxyResult
	c.run("proxies", prox, "every proxy connected and on the current config version", []string{"debug"}, func() outcome {
		if in.ds == nil {
			return outcome{Status: skipped, Reason: fmt.Sprintf("there is no DaemonSet %s/%s", s.ns, proxyName)}
		}
		proxies = s.proxyDebugs(ctx, in.proxies)
		return proxiesCurrent(s, st, proxies)
	})
	c.run("versions", prox, "client, controller and proxies run one Trellis version", []string{"debug"}, func() outcome {
		return oneVersion(st, ctlPod, proxies)
	})

	c.run("dns", dnsSection, "DNS integration healthy", []string{"debug", "leader"}, func() outcome {
		switch {
		case st.CoreDNSEnabled != nil && !*st.CoreDNSEnabled:
			return pass("DNS integration left to you (coreDNS.enabled: false; forward the mesh domains to the trellis-dns Service)")
		case !st.Leading:
			return outcome{Status: skipped, Reason: fmt.Sprintf("%s does not lead, and only the leader edits CoreDNS", ctlPod.Name)}
		case st.DNSSynced:
			return pass("DNS integration healthy (CoreDNS forwards the mesh domains to the controller)")
		}
		why := st.DNS
		if why == "" {
			why = "the leader has not edited CoreDNS yet"
		}
		return outcome{Status: failed, Detail: []string{why}, Hint: "see Mesh DNS names in docs/controller.md; kubectl -n kube-system get configmap coredns -o yaml"}
	})

	c.run("problems", cfg, "no config errors", []string{"debug"}, func() outcome {
		ps, err := s.problems(ctx, in, ctlPod)
		if err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}, Hint: hintOf(err)}
		}
		return problemsOutcome(ps)
	})
	return nil
}

// hintOf returns a clienv.Error's hint.
func hintOf(err error) string {
	var ce *clienv.Error
	if errors.As(err, &ce) {
		return ce.Hint
	}
	return ""
}

func kubeVersion(sv *version.Info) outcome {
	minor, err := strconv.Atoi(strings.TrimRight(sv.Minor, "+"))
	if sv.Major != "1" || err != nil {
		return outcome{Status: failed, Check: fmt.Sprintf("Kubernetes version %q.%q not understood", sv.Major, sv.Minor), Hint: fmt.Sprintf("Trellis needs Kubernetes 1.%d or newer", minKubeMinor)}
	}
	if minor < minKubeMinor {
		return outcome{Status: failed, Check: fmt.Sprintf("Kubernetes 1.%d is too old (1.%d or newer is supported)", minor, minKubeMinor), Hint: "upgrade the cluster"}
	}
	return pass(fmt.Sprintf("Kubernetes 1.%d is supported (1.%d or newer)", minor, minKubeMinor))
}

// mayAll passes when every attribute set is allowed, else lists the missing.
func mayAll(ctx context.Context, s *session, attrs []*authzv1.ResourceAttributes) outcome {
	var missing []string
	for _, a := range attrs {
		ok, err := s.may(ctx, a, nil)
		if err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}}
		}
		if !ok {
			missing = append(missing, "you may not "+describeAttrs(a))
		}
	}
	if len(missing) > 0 {
		return outcome{Status: failed, Detail: missing, Hint: rbacHint(s.ns)}
	}
	return pass("")
}

func describeAttrs(a *authzv1.ResourceAttributes) string {
	res := a.Resource
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	if a.Group != "" {
		res += "." + a.Group
	}
	s := a.Verb + " " + res
	if a.Name != "" {
		s += " " + a.Name
	}
	if a.Namespace != "" {
		return s + " in namespace " + a.Namespace
	}
	return s + " (cluster-wide)"
}

// debugAccess says which credentials the debug API will be read with.
func debugAccess(ctx context.Context, s *session) outcome {
	if s.ownTok != "" {
		ok, err := s.may(ctx, nil, &authzv1.NonResourceAttributes{Path: serve.DebugPath, Verb: "get"})
		if err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}}
		}
		if ok {
			return pass("may read the controller's debug API (with your own token)")
		}
	}
	ok, err := s.may(ctx, tokenAttrs(s.ns), nil)
	if err != nil {
		return outcome{Status: failed, Detail: []string{err.Error()}}
	}
	if !ok {
		d := []string{"you may not " + describeAttrs(tokenAttrs(s.ns))}
		if s.ownTok != "" {
			d = append(d, "your own token may not get "+serve.DebugPath)
		}
		return outcome{Status: failed, Detail: d, Hint: rbacHint(s.ns)}
	}
	return pass(fmt.Sprintf("may read the controller's debug API (with a token for ServiceAccount %s/%s)", s.ns, cliServiceAccount))
}

func listCRDs(ctx context.Context, s *session) (map[string]*apiextensionsv1.CustomResourceDefinition, error) {
	cfg, err := s.env.RESTConfig()
	if err != nil {
		return nil, err
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	list, err := ext.ApiextensionsV1().CustomResourceDefinitions().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("list CustomResourceDefinitions", err)
	}
	out := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

func servedVersions(c *apiextensionsv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range c.Spec.Versions {
		if v.Served {
			out = append(out, v.Name)
		}
	}
	return out
}

// crdServed compares a CRD in the cluster with the one Trellis ships.
func crdServed(want, got *apiextensionsv1.CustomResourceDefinition) outcome {
	if got == nil {
		return outcome{Status: failed, Check: "CRD " + want.Name + " present", Detail: []string{"it is missing"}, Hint: "kubectl trellis install applies it"}
	}
	have := servedVersions(got)
	title := fmt.Sprintf("CRD %s serves %s", want.Name, strings.Join(have, ", "))
	established := false
	for _, cond := range got.Status.Conditions {
		if cond.Type == apiextensionsv1.Established {
			established = cond.Status == apiextensionsv1.ConditionTrue
		}
	}
	if !established {
		return outcome{Status: failed, Check: title, Detail: []string{"it is not Established: the apiserver does not serve it yet"}, Hint: "kubectl describe crd " + want.Name}
	}
	var missing []string
	for _, v := range servedVersions(want) {
		if !slices.Contains(have, v) {
			missing = append(missing, v)
		}
	}
	if len(missing) == 0 {
		return pass(title)
	}
	if len(missing) == len(servedVersions(want)) {
		return outcome{Status: failed, Check: title, Detail: []string{fmt.Sprintf("Trellis reads %s, none of which is served", strings.Join(servedVersions(want), ", "))},
			Hint: "kubectl trellis install replaces it with the CRD Trellis ships"}
	}
	return outcome{Status: warning, Check: title, Detail: []string{fmt.Sprintf("%s not served; objects written at those versions cannot be read", strings.Join(missing, ", "))},
		Hint: "kubectl trellis install upgrades it to serve every version Trellis reads"}
}

func deploymentReady(in *install) outcome {
	want := replicas(in.deploy)
	ready := in.deploy.Status.ReadyReplicas
	title := fmt.Sprintf("controller Deployment %s/%s ready (%d of %d replicas)", in.ns, controllerName, ready, want)
	hint := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", in.ns, controllerName, in.ns, controllerName)
	switch {
	case ready == 0:
		return outcome{Status: failed, Check: title, Hint: hint}
	case ready < want:
		return outcome{Status: warning, Check: title, Detail: []string{"fewer replicas than asked for: a controller restart would interrupt leadership"}, Hint: hint}
	}
	return pass(title)
}

func daemonSetReady(in *install) outcome {
	if in.ds == nil {
		return outcome{Status: failed, Check: fmt.Sprintf("proxy DaemonSet %s/%s present", in.ns, proxyName), Detail: []string{"it is missing: no node has a proxy"}, Hint: "re-run kubectl trellis install"}
	}
	st := in.ds.Status
	title := fmt.Sprintf("proxy DaemonSet %s/%s ready on every node (%d of %d)", in.ns, proxyName, st.NumberReady, st.DesiredNumberScheduled)
	hint := fmt.Sprintf("kubectl -n %s describe daemonset %s; kubectl -n %s get pods -o wide -l %s", in.ns, proxyName, in.ns, metav1.FormatLabelSelector(in.ds.Spec.Selector))
	switch {
	case st.DesiredNumberScheduled == 0:
		return outcome{Status: failed, Check: title, Detail: []string{"it is scheduled on no node (taints? a nodeSelector?)"}, Hint: hint}
	case st.NumberReady < st.DesiredNumberScheduled:
		var notReady []string
		for i := range in.proxies {
			if p := &in.proxies[i]; !podReady(p) {
				notReady = append(notReady, fmt.Sprintf("%s on %s: %s", p.Name, orDash(p.Spec.NodeName), podPhase(p)))
			}
		}
		return outcome{Status: failed, Check: title, Detail: notReady, Hint: hint}
	}
	return pass(title)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortVersion shortens a config version for tables.
func shortVersion(v string) string {
	if v == "" {
		return ""
	}
	if i := strings.LastIndexByte(v, ':'); i >= 0 && len(v)-i-1 > 12 {
		return v[:i+1+12]
	}
	return v
}

func proxiesCurrent(s *session, st *controllerState, proxies []proxyResult) outcome {
	if len(proxies) == 0 {
		return outcome{Status: failed, Detail: []string{fmt.Sprintf("DaemonSet %s/%s has no pods", s.ns, proxyName)}, Hint: fmt.Sprintf("kubectl -n %s describe daemonset %s", s.ns, proxyName)}
	}
	var bad, pods []string
	for _, p := range proxies {
		n := len(bad)
		node := orDash(p.pod.Spec.NodeName)
		want := st.Versions[p.pod.Spec.NodeName]
		switch {
		case p.err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", node, p.err))
		case p.debug.Version == "":
			why := p.debug.NotReadyReason
			if p.debug.LastRejection != "" {
				why = "it rejected its config: " + p.debug.LastRejection
			}
			bad = append(bad, fmt.Sprintf("%s: %s holds no config yet (%s)", node, p.pod.Name, why))
		case want == "":
			bad = append(bad, fmt.Sprintf("%s: %s serves %s, but the controller has no config for node %s", node, p.pod.Name, shortVersion(p.debug.Version), node))
		case p.debug.Version != want:
			line := fmt.Sprintf("%s: %s serves %s (received %s ago), the current version is %s", node, p.pod.Name,
				shortVersion(p.debug.Version), duration.HumanDuration(s.d.now().Sub(p.debug.AppliedAt)), shortVersion(want))
			if p.debug.LastRejection != "" {
				line += "; it rejected a newer config: " + p.debug.LastRejection
			}
			bad = append(bad, line)
		}
		if len(bad) > n {
			pods = append(pods, p.pod.Name)
		}
	}
	title := fmt.Sprintf("every proxy connected and on the current config version (%d of %d)", len(proxies)-len(bad), len(proxies))
	if len(bad) > 0 {
		return outcome{Status: failed, Check: title, Detail: bad,
			Hint: logsHint(s.ns, pods) + "; kubectl trellis status shows each node"}
	}
	return pass(title)
}

func logsHint(ns string, pods []string) string {
	if len(pods) == 1 {
		return fmt.Sprintf("kubectl -n %s logs %s", ns, pods[0])
	}
	return fmt.Sprintf("kubectl -n %s logs <pod> (%s)", ns, strings.Join(pods, ", "))
}

func oneVersion(st *controllerState, ctlPod *corev1.Pod, proxies []proxyResult) outcome {
	client := trellisversion.Get()
	var odd []string
	if st.Version != client {
		odd = append(odd, fmt.Sprintf("controller %s runs %s", ctlPod.Name, orDash(st.Version)))
	}
	for _, p := range proxies {
		if p.debug != nil && p.debug.ProxyVersion != client {
			odd = append(odd, fmt.Sprintf("proxy %s runs %s", p.pod.Name, orDash(p.debug.ProxyVersion)))
		}
	}
	if len(odd) > 0 {
		return outcome{Status: warning, Check: fmt.Sprintf("client %s, controller and proxies run one Trellis version", client), Detail: odd,
			Hint: "run kubectl trellis install with this plugin to move the mesh to its version, or use the plugin of the mesh's version"}
	}
	return pass(fmt.Sprintf("client, controller and proxies run Trellis %s", client))
}

func problemsOutcome(ps []smi.Problem) outcome {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Severity == smi.Error && ps[j].Severity != smi.Error })
	var errs, warns int
	var detail []string
	for _, p := range ps {
		if p.Severity == smi.Error {
			errs++
		} else {
			warns++
		}
		detail = append(detail, fmt.Sprintf("%s: %s", p.Severity, p.String()))
	}
	hint := "fix the objects named above; each problem is also an Event on its object (kubectl describe)"
	switch {
	case errs > 0:
		return outcome{Status: failed, Check: fmt.Sprintf("no config errors (%s, %s)", count(errs, "error"), count(warns, "warning")), Detail: detail, Hint: hint}
	case warns > 0:
		return outcome{Status: warning, Check: fmt.Sprintf("no config errors (%s)", count(warns, "warning")), Detail: detail, Hint: hint}
	}
	return pass("")
}

// count is "1 error", "2 errors".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
