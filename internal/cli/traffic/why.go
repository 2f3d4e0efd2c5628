package traffic

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
)

// The controller's settings ConfigMap (manifests/base/configmap.yaml).
const (
	settingsConfigMap = "trellis-controller"
	settingsKey       = "settings.yaml"
)

const whyLong = `Explain what the mesh does with a request from a pod to a Service: whether
the Service is meshed, whether access control allows the request (naming
the TrafficTarget, rule and match that allow it, or what is missing and
the command that would allow it), and which backends of a TrafficSplit it
would reach, with their weights.

why reads the objects the controller reads (the pod, the Service, its
EndpointSlices and pods, the namespace, the mesh settings ConfigMap and the
SMI objects in the versions the cluster serves) and runs them through the
controller's own topology and SMI policy code, so the answer is the one
the node proxy applies.

--from is the client pod (its ServiceAccount is its identity; -n or
NAMESPACE/POD). --to is the Service and port it calls; a Service name alone
is looked up in the pod's namespace. --method, --path and --header describe
an HTTP request (GET / by default) and are ignored for TCP and UDP ports.

why exits 0 whether the request is allowed or denied; it exits 2 for bad
flags and 6 when the pod or Service does not exist.`

func whyCmd(env *clienv.Env) *cobra.Command {
	var from, to, method, path string
	var headers []string
	cmd := &cobra.Command{
		Use:   "why --from POD --to SERVICE[:PORT]",
		Short: "Explain whether a request is allowed and where a split sends it",
		Long:  whyLong,
		Example: `  kubectl trellis why -n shop --from frontend-7c9d --to web:80 --path /api/items
  kubectl trellis why --from shop/frontend-7c9d --to web.shop:80 --method POST --header x-canary=true
  kubectl trellis why -n shop --from worker-0 --to db:5432 -o json`,
		Args: cobra.NoArgs,
	}
	out := clienv.OutputFlag(cmd, "text", clienv.JSON, clienv.YAML)
	cmd.Flags().StringVar(&from, "from", "", "client pod: POD (in -n) or NAMESPACE/POD")
	cmd.Flags().StringVar(&to, "to", "", "Service called: "+toForm)
	cmd.Flags().StringVar(&method, "method", "GET", "HTTP method of the request")
	cmd.Flags().StringVar(&path, "path", "/", "HTTP path of the request")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "HTTP request header NAME=VALUE (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req, err := parseWhy(from, to, method, path, headers, cmd.Flags().Changed)
		if err != nil {
			return err
		}
		ex, err := explain(cmd.Context(), env, req)
		if err != nil {
			return err
		}
		if *out != "text" {
			return clienv.PrintData(env.IO.Out, *out, ex)
		}
		return printWhy(env, ex)
	}
	return cmd
}

// explanation is why's answer (also its -o json/yaml document).
type explanation struct {
	From     fromInfo      `json:"from"`
	To       toInfo        `json:"to"`
	Request  *httpRequest  `json:"request,omitempty"`
	Meshed   bool          `json:"meshed"`
	MeshedBy string        `json:"meshedBy"` // why it is, or is not
	JoinFix  string        `json:"joinFix,omitempty"`
	Proxy    proxyInfo     `json:"proxy"`
	Access   *accessInfo   `json:"access,omitempty"`
	Split    *splitInfo    `json:"split,omitempty"`
	Problems []smi.Problem `json:"problems,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
}

type fromInfo struct {
	Namespace      string `json:"namespace"`
	Pod            string `json:"pod"`
	ServiceAccount string `json:"serviceAccount"`
	Node           string `json:"node,omitempty"`
	IP             string `json:"ip,omitempty"`
	// Identified: the node proxy can tell this pod's traffic by its
	// address; NotIdentified says why not.
	Identified    bool   `json:"identified"`
	NotIdentified string `json:"notIdentified,omitempty"`
}

type toInfo struct {
	Namespace  string `json:"namespace"`
	Service    string `json:"service"`
	Port       int32  `json:"port"`
	PortName   string `json:"portName,omitempty"`
	Protocol   string `json:"protocol,omitempty"` // http, tcp or udp when meshed
	TargetPort int32  `json:"targetPort,omitempty"`
	MeshName   string `json:"meshName,omitempty"`
	// Identities are the ServiceAccounts of the Service's pods, namespace/name.
	Identities []string `json:"identities,omitempty"`
}

type httpRequest struct {
	Method string              `json:"method"`
	Path   string              `json:"path"`
	Header map[string][]string `json:"header,omitempty"`
}

type proxyInfo struct {
	Pod string `json:"pod,omitempty"`
	// Problem says why no proxy serves the client's node.
	Problem string `json:"problem,omitempty"`
}

type accessInfo struct {
	Allowed bool `json:"allowed"`
	// ACL is whether access control is on, and ACLFrom where that comes from.
	ACL     bool   `json:"acl"`
	ACLFrom string `json:"aclFrom"`
	// Reason is smi.Policy.Allowed's answer, or why it could not be asked.
	Reason smi.Reason `json:"reason"`
	// WithACL is what access control would decide, when it is off.
	WithACL *smi.Reason `json:"withACL,omitempty"`
	// Fix is a command or step that would allow the request.
	Fix string `json:"fix,omitempty"`
}

type splitInfo struct {
	// TrafficSplit is namespace/name of the split for the Service, if any.
	TrafficSplit string `json:"trafficSplit,omitempty"`
	// Applies is false when the request goes to the Service's own endpoints.
	Applies  bool          `json:"applies"`
	Reason   string        `json:"reason"`
	Backends []backendInfo `json:"backends,omitempty"`
}

type backendInfo struct {
	Service string  `json:"service"`
	Weight  int32   `json:"weight"`
	Percent float64 `json:"percent"`
}

// cluster is everything why reads.
type cluster struct {
	pod      *corev1.Pod
	svc      *corev1.Service
	settings settings.Settings
	aclFrom  string
	snap     topology.Snapshot
	smiObjs  []smi.Object // decoded, for finding the TrafficTargets involved
	proxy    proxyInfo
	notes    []string
}

func explain(ctx context.Context, env *clienv.Env, r *whyRequest) (*explanation, error) {
	c, err := read(ctx, env, r)
	if err != nil {
		return nil, err
	}
	// Port: validated against the Service before any explanation.
	sp, err := servicePort(c.svc, r.toPort, r)
	if err != nil {
		return nil, err
	}
	t := topology.Build(&c.snap, topology.Options{MeshNamespace: c.settings.MeshNamespace, DefaultTrafficType: c.settings.DefaultTrafficType})
	ex := &explanation{Notes: c.notes, Proxy: c.proxy}
	ex.From = fromOf(c.pod, t)
	ex.To = toInfo{Namespace: c.svc.Namespace, Service: c.svc.Name, Port: sp.Port, PortName: sp.Name}

	var ts *topology.Service
	for _, s := range t.Services {
		if s.Namespace == c.svc.Namespace && s.Name == c.svc.Name {
			ts = s
		}
	}
	refs := involved(c, t, ts)
	ex.Problems = problemsFor(t.Problems, refs)
	if ts == nil {
		m, why := isMeshed(c.svc, nsOf(c.snap, c.svc.Namespace), c.settings.MeshNamespace)
		ex.MeshedBy = why
		switch {
		case m:
			ex.MeshedBy = why + ", but the controller cannot mesh it (see the problems below)"
		case c.svc.Namespace != c.settings.MeshNamespace && c.svc.Spec.Type != corev1.ServiceTypeExternalName:
			ex.JoinFix = fmt.Sprintf("kubectl trellis join %s -n %s", c.svc.Name, c.svc.Namespace)
		}
		return ex, nil
	}
	ex.Meshed, ex.MeshedBy = true, ts.MeshedBy
	for _, id := range ts.Identities {
		ex.To.Identities = append(ex.To.Identities, id.Namespace+"/"+id.ServiceAccount)
	}
	var port *meshPort
	for _, p := range ts.Ports {
		if p.Port == sp.Port && (p.Protocol == "udp") == (sp.Protocol == corev1.ProtocolUDP) {
			port = &meshPort{string(p.Protocol), p.TargetPort}
		}
	}
	if port == nil {
		ex.Meshed = false
		ex.MeshedBy = fmt.Sprintf("port %d/%s is not meshed, although the Service is (%s); see the problems below", sp.Port, protoName(sp.Protocol), ts.MeshedBy)
		return ex, nil
	}
	ex.To.Protocol, ex.To.TargetPort = port.proto, port.target
	ex.To.MeshName = fmt.Sprintf("%s.%s.%s:%d", c.svc.Name, c.svc.Namespace, c.settings.MeshDomain, sp.Port)
	req := smi.Request{Protocol: smi.Protocol(port.proto), Port: port.target}
	if req.Protocol == smi.HTTP {
		req.Method, req.Path, req.Header = r.method, r.path, r.header
		ex.Request = &httpRequest{Method: r.method, Path: r.path}
		if len(r.header) > 0 {
			ex.Request.Header = r.header
		}
		if r.query {
			ex.Notes = append(ex.Notes, "--path: the query string is left out; route matches see the path only")
		}
	} else if len(r.httpFlags) > 0 {
		ex.Notes = append(ex.Notes, fmt.Sprintf("%s ignored: port %d is %s, not HTTP", strings.Join(r.httpFlags, ", "), sp.Port, strings.ToUpper(port.proto)))
	}
	ex.Access = access(c, t, ts, ex, req)
	splitReq := req
	splitReq.Port = sp.Port // splits are per root Service port
	ex.Split = split(t, ts, splitReq)
	return ex, nil
}

type meshPort struct {
	proto  string
	target int32
}

// read gets every object why needs, failing only for bad input (missing
// pod or Service) or when the apiserver refuses.
func read(ctx context.Context, env *clienv.Env, r *whyRequest) (*cluster, error) {
	kube, err := env.Kube()
	if err != nil {
		return nil, err
	}
	dyn, err := env.Dynamic()
	if err != nil {
		return nil, err
	}
	if r.fromNS == "" {
		if r.fromNS, _, err = env.Namespace(); err != nil {
			return nil, err
		}
	}
	if r.toNS == "" {
		r.toNS = r.fromNS
	}
	c := &cluster{}
	if c.pod, err = kube.CoreV1().Pods(r.fromNS).Get(ctx, r.fromPod, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("--from: pod %s/%s not found", r.fromNS, r.fromPod), "list pods with kubectl get pods -n "+r.fromNS)
		}
		return nil, clienv.APIError(fmt.Sprintf("get pod %s/%s", r.fromNS, r.fromPod), err)
	}
	if c.svc, err = kube.CoreV1().Services(r.toNS).Get(ctx, r.toSvc, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("--to: Service %s/%s not found", r.toNS, r.toSvc), "list Services with kubectl get services -n "+r.toNS)
		}
		return nil, clienv.APIError(fmt.Sprintf("get Service %s/%s", r.toNS, r.toSvc), err)
	}
	c.settings, c.aclFrom = readSettings(ctx, env, c)

	ns := r.toNS
	if n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		c.snap.Namespaces = []*corev1.Namespace{n}
	} else {
		c.notes = append(c.notes, fmt.Sprintf("cannot read namespace %s (%s): its %s label is not taken into account", ns, oneLine(err.Error()), "trellis.io/mesh"))
	}
	svcs, err := kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("list Services in namespace "+ns, err)
	}
	for i := range svcs.Items {
		c.snap.Services = append(c.snap.Services, &svcs.Items[i])
	}
	slices, err := kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("list EndpointSlices in namespace "+ns, err)
	}
	for i := range slices.Items {
		c.snap.EndpointSlices = append(c.snap.EndpointSlices, &slices.Items[i])
	}
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("list pods in namespace "+ns, err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; !(p.Namespace == c.pod.Namespace && p.Name == c.pod.Name) {
			c.snap.Pods = append(c.snap.Pods, p)
		}
	}
	c.snap.Pods = append(c.snap.Pods, c.pod)

	served, err := smi.Discover(kube.Discovery())
	if err != nil {
		return nil, clienv.APIError("discover the SMI API versions", err)
	}
	if len(served.Versions) == 0 {
		c.notes = append(c.notes, "the cluster serves no SMI API (kubectl trellis install installs the CRDs), so there is no TrafficTarget or TrafficSplit")
	}
	for _, ki := range smi.Kinds {
		gvr, ok := served.GVR(ki.Kind)
		if !ok {
			continue
		}
		list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, clienv.APIError(fmt.Sprintf("list %s (%s) in namespace %s", ki.Resource, gvr.GroupVersion(), ns), err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			c.snap.SMI = append(c.snap.SMI, u)
			if o, _ := smi.Decode(u); o != nil {
				c.smiObjs = append(c.smiObjs, o)
			}
		}
	}
	c.proxy = nodeProxy(ctx, env, c.pod)
	return c, nil
}

// readSettings reads the mesh settings as the controller does; when they
// cannot be read, the built-in defaults are used and a note says so.
func readSettings(ctx context.Context, env *clienv.Env, c *cluster) (settings.Settings, string) {
	def := settings.Default()
	def.MeshNamespace = env.MeshNamespace
	where := fmt.Sprintf("ConfigMap %s/%s", env.MeshNamespace, settingsConfigMap)
	fallback := func(why string) (settings.Settings, string) {
		c.notes = append(c.notes, fmt.Sprintf("%s: %s; assuming the built-in settings (acl: %t)", where, why, def.ACL))
		return def, "the built-in default: " + where + " is unusable, see the notes"
	}
	kube, err := env.Kube()
	if err != nil {
		return fallback(err.Error())
	}
	cm, err := kube.CoreV1().ConfigMaps(env.MeshNamespace).Get(ctx, settingsConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fallback("not found (is Trellis installed? pass --mesh-namespace if it runs elsewhere)")
	case err != nil:
		return fallback("cannot be read: " + oneLine(err.Error()))
	}
	data, ok := cm.Data[settingsKey]
	if !ok {
		return fallback("has no " + settingsKey)
	}
	s, err := settings.Parse([]byte(data))
	if err != nil {
		return fallback(settingsKey + " is invalid, so the controller would not start: " + oneLine(err.Error()))
	}
	return s, fmt.Sprintf("%s, %s: acl: %t", where, settingsKey, s.ACL)
}

// nodeProxy finds the proxy on the client's node: without one, the mesh
// name has no local endpoint and connections fail.
func nodeProxy(ctx context.Context, env *clienv.Env, pod *corev1.Pod) proxyInfo {
	node := pod.Spec.NodeName
	if node == "" {
		return proxyInfo{Problem: "the pod is not scheduled to a node yet"}
	}
	kube, err := env.Kube()
	if err != nil {
		return proxyInfo{Problem: oneLine(err.Error())}
	}
	ps, skipped, err := listProxies(ctx, kube, env.MeshNamespace, node)
	switch {
	case err != nil:
		return proxyInfo{Problem: oneLine(err.Error())}
	case len(ps) > 0:
		return proxyInfo{Pod: env.MeshNamespace + "/" + ps[0].Pod}
	case len(skipped) > 0:
		return proxyInfo{Problem: skipped[0] + "; until it runs, connections from node " + node + " to mesh names fail"}
	}
	return proxyInfo{Problem: fmt.Sprintf("no pod of DaemonSet %s/%s runs on node %s (taints? nodeSelector?); connections from this node to mesh names fail", env.MeshNamespace, proxyDaemonSet, node)}
}

// servicePort picks the Service port --to names, or its only port.
func servicePort(svc *corev1.Service, port string, r *whyRequest) (corev1.ServicePort, error) {
	var names []string
	for _, p := range svc.Spec.Ports {
		n := strconv.Itoa(int(p.Port)) + "/" + protoName(p.Protocol)
		if p.Name != "" {
			n += " (" + p.Name + ")"
		}
		names = append(names, n)
		if port == "" {
			continue
		}
		if p.Name == port || strconv.Itoa(int(p.Port)) == port {
			return p, nil
		}
	}
	key := svc.Namespace + "/" + svc.Name
	switch {
	case len(svc.Spec.Ports) == 0:
		return corev1.ServicePort{}, clienv.Usagef("--to: Service %s has no ports", key)
	case port == "" && len(svc.Spec.Ports) == 1:
		return svc.Spec.Ports[0], nil
	case port == "":
		return corev1.ServicePort{}, clienv.Usagef("--to %s: Service %s has several ports (%s); add :PORT", r.toSvc, key, strings.Join(names, ", "))
	}
	return corev1.ServicePort{}, clienv.Usagef("--to %s:%s: Service %s has no port %s; its ports are %s", r.toSvc, port, key, port, strings.Join(names, ", "))
}

func protoName(p corev1.Protocol) string {
	if p == "" {
		return "TCP"
	}
	return string(p)
}

func nsOf(s topology.Snapshot, name string) *corev1.Namespace {
	for _, n := range s.Namespaces {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// fromOf describes the client and whether its proxy can identify it: the
// controller lists it among the node's local pods.
func fromOf(p *corev1.Pod, t *topology.Topology) fromInfo {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	f := fromInfo{Namespace: p.Namespace, Pod: p.Name, ServiceAccount: sa, Node: p.Spec.NodeName, IP: p.Status.PodIP}
	for _, lp := range t.LocalPods[p.Spec.NodeName] {
		if lp.Name == p.Namespace+"/"+p.Name {
			f.Identified = true
			return f
		}
	}
	switch {
	case p.Spec.NodeName == "":
		f.NotIdentified = "the pod is not scheduled to a node yet"
	case p.Spec.HostNetwork:
		f.NotIdentified = "the pod uses the host network, so its traffic carries the node's address and has no identity"
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		f.NotIdentified = "the pod has finished"
	case p.Status.PodIP == "":
		f.NotIdentified = "the pod has no IP address yet"
	default:
		f.NotIdentified = "another pod on node " + p.Spec.NodeName + " has the same IP address, so the proxy attributes it to that pod"
	}
	return f
}

// involved lists the objects whose problems matter to this explanation.
func involved(c *cluster, t *topology.Topology, ts *topology.Service) map[smi.Ref]bool {
	ns, name := c.svc.Namespace, c.svc.Name
	refs := map[smi.Ref]bool{
		{Kind: "Service", Namespace: ns, Name: name}: true,
		{Kind: "Namespace", Name: ns}:                true,
	}
	if plan, ok := t.Policy.SplitPlan(ns, name); ok {
		refs[plan.Split] = true
		for _, m := range plan.Matches {
			g := strings.SplitN(m.Group, "/", 2)
			refs[smi.Ref{Kind: smi.KindHTTPRouteGroup, Namespace: g[0], Name: g[len(g)-1]}] = true
		}
		for _, ps := range plan.Ports {
			for _, b := range ps.Backends {
				refs[smi.Ref{Kind: "Service", Namespace: ns, Name: b.Service}] = true
			}
		}
	}
	// TrafficSplits naming this Service as root (losing ones included).
	for _, o := range c.smiObjs {
		if s, ok := o.(*smi.TrafficSplit); ok && s.Service == name {
			refs[s.Ref] = true
		}
	}
	if ts == nil {
		return refs
	}
	for _, id := range ts.Identities {
		dst := smi.Identity{Namespace: id.Namespace, Name: id.ServiceAccount}
		for _, g := range t.Policy.Grants(dst) {
			refs[g.Target] = true
			for _, r := range g.Rules {
				refs[smi.Ref{Kind: r.Kind, Namespace: g.Target.Namespace, Name: r.Name}] = true
			}
		}
		// Invalid TrafficTargets for this destination have no Grant.
		for _, o := range c.smiObjs {
			if tt, ok := o.(*smi.TrafficTarget); ok && tt.Destination == dst {
				refs[tt.Ref] = true
			}
		}
	}
	return refs
}

func problemsFor(all []smi.Problem, refs map[smi.Ref]bool) []smi.Problem {
	var out []smi.Problem
	for _, p := range all {
		if refs[p.Object] {
			out = append(out, p)
		}
	}
	return out
}

// access decides as the node proxy does: with ACL off everything passes;
// with it on, the client needs an identity, the Service exactly one
// destination identity, and smi.Policy.Allowed must say yes.
func access(c *cluster, t *topology.Topology, ts *topology.Service, ex *explanation, req smi.Request) *accessInfo {
	a := &accessInfo{ACL: c.settings.ACL, ACLFrom: c.aclFrom}
	decision, fix := decide(t, ts, ex, req)
	if !a.ACL {
		a.Allowed = true
		a.Reason = smi.Reason{Allowed: true, Rule: -1, Message: "allowed: access control is off, so every request is allowed and TrafficTargets are not enforced"}
		a.WithACL = &decision
		return a
	}
	a.Allowed, a.Reason = decision.Allowed, decision
	if !a.Allowed {
		a.Fix = fix
	}
	return a
}

func decide(t *topology.Topology, ts *topology.Service, ex *explanation, req smi.Request) (smi.Reason, string) {
	deny := func(msg string) smi.Reason { return smi.Reason{Rule: -1, Message: "denied: " + msg} }
	svc := ts.Namespace + "/" + ts.Name
	if !ex.From.Identified {
		return deny("the node proxy cannot identify the client: " + ex.From.NotIdentified), "run the client as a pod on the pod network; the proxy knows clients by their pod IP"
	}
	switch len(ts.Identities) {
	case 0:
		return deny(fmt.Sprintf("Service %s has no endpoint pods, so its ServiceAccount is unknown and no TrafficTarget can apply", svc)),
			fmt.Sprintf("start pods that the Service %s selects (kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s)", svc, ts.Namespace, ts.Name)
	case 1:
	default:
		return deny(fmt.Sprintf("the pods of Service %s run as several ServiceAccounts (%s); access is decided per Service, so no TrafficTarget applies", svc, strings.Join(ex.To.Identities, ", "))),
			"run every pod of the Service as one ServiceAccount"
	}
	id := ts.Identities[0]
	src := smi.Identity{Namespace: ex.From.Namespace, Name: ex.From.ServiceAccount}
	dst := smi.Identity{Namespace: id.Namespace, Name: id.ServiceAccount}
	ok, why := t.Policy.Allowed(src, dst, req)
	if ok {
		return why, ""
	}
	return why, allowCommand(src, dst, req)
}

// allowCommand is the narrowest kubectl trellis allow that lets req through.
func allowCommand(src, dst smi.Identity, req smi.Request) string {
	cmd := fmt.Sprintf("kubectl trellis allow --from sa/%s/%s --to sa/%s/%s", src.Namespace, src.Name, dst.Namespace, dst.Name)
	switch req.Protocol {
	case smi.HTTP:
		cmd += " --path " + shellQuote(regexpQuote(req.Path)+"$") + " --methods " + shellQuote(req.Method)
	default:
		cmd += " --ports " + strconv.Itoa(int(req.Port))
	}
	return cmd
}

// regexpQuote escapes RE2 metacharacters (regexp.QuoteMeta, minus the
// escaping of '/' it never does anyway).
func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// shellQuote single-quotes s when a POSIX shell would change it.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_.,:=@%+-", r)) {
			safe = false
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// split says where the request goes: the TrafficSplit smi picks for it,
// applied as the controller compiled it for the proxies (backends outside
// the mesh or without the root's ports are left out there).
func split(t *topology.Topology, ts *topology.Service, req smi.Request) *splitInfo {
	root := fmt.Sprintf("Service %s/%s's own endpoints", ts.Namespace, ts.Name)
	plan, ok := t.Policy.SplitPlan(ts.Namespace, ts.Name)
	if !ok {
		return &splitInfo{Reason: "no TrafficSplit has this Service as its root; the request goes to " + root}
	}
	d := t.Policy.Split(ts.Namespace, ts.Name, req)
	s := &splitInfo{TrafficSplit: plan.Split.NamespacedName(), Reason: d.Reason}
	switch {
	case d.ToRoot:
		return s
	case ts.Split == nil:
		s.Reason = fmt.Sprintf("TrafficSplit %s would split it, but the controller does not apply it (see the problems below); the request goes to %s", d.TrafficSplit, root)
		return s
	}
	s.Applies = true
	var total int64
	for _, b := range ts.Split.Backends {
		total += int64(b.Weight)
	}
	for _, b := range ts.Split.Backends {
		pctv := 0.0
		if total > 0 {
			pctv = roundTo(float64(b.Weight)*100/float64(total), 2)
		}
		s.Backends = append(s.Backends, backendInfo{Service: b.Service, Weight: b.Weight, Percent: pctv})
	}
	left := leftOut(d, ts)
	if len(left) > 0 {
		s.Reason += fmt.Sprintf("; left out by the controller: %s (see the problems below)", strings.Join(left, ", "))
	}
	return s
}

// leftOut names backends smi would use that the compiled split lacks.
func leftOut(d smi.SplitDecision, ts *topology.Service) []string {
	have := map[string]bool{}
	for _, b := range ts.Split.Backends {
		have[b.Service] = true
	}
	var out []string
	for _, b := range d.Backends {
		if !have[b.Service] {
			out = append(out, b.Service)
		}
	}
	sort.Strings(out)
	return out
}
