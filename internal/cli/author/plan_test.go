package author

import (
	"context"
	"errors"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
)

// A write that fails after the server-side dry run passed (the cluster
// changed in between) must not leave the objects this run created: the
// real apiserver cannot be made to fail on cue, so this narrow test uses
// client-go's fakes.
func TestPlanRollsBackCreatesOnFailure(t *testing.T) {
	kube := kubefake.NewClientset()
	kube.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = true
		return true, r, nil
	})
	tcpKV := kindVersion{info: mustInfo(smi.KindTCPRoute), version: "v1alpha4"}
	ttKV := kindVersion{info: mustInfo(smi.KindTrafficTarget), version: "v1alpha3"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		tcpKV.gvr(): "TCPRouteList", ttKV.gvr(): "TrafficTargetList",
	})
	var realWrites []string
	dyn.PrependReactor("create", "traffictargets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd is unavailable"))
	})
	dyn.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c := a.(k8stesting.CreateActionImpl)
		if len(c.CreateOptions.DryRun) > 0 {
			return true, c.GetObject(), nil // a dry run stores nothing
		}
		realWrites = append(realWrites, a.GetResource().Resource)
		return false, nil, nil
	})

	route := newObject(smi.KindTCPRoute, "shop", "x")
	route.SetAPIVersion(tcpKV.apiVersion())
	tt := newObject(smi.KindTrafficTarget, "shop", "x")
	p := &plan{s: &session{kube: kube, dyn: dyn}}
	p.add(&op{action: actCreate, kv: tcpKV, obj: route})
	p.add(&op{action: actCreate, kv: ttKV, obj: tt})
	err := p.apply(context.Background(), false)
	if err == nil {
		t.Fatal("apply succeeded although the TrafficTarget could not be written")
	}
	if !strings.Contains(err.Error(), "rolled back: tcproute.specs.smi-spec.io/x (deleted again)") || !strings.Contains(err.Error(), "etcd is unavailable") {
		t.Errorf("error %q does not say what failed and what was rolled back", err)
	}
	if clienv.Code(err) != clienv.ExitFailure {
		t.Errorf("exit code %d, want %d", clienv.Code(err), clienv.ExitFailure)
	}
	if strings.Join(realWrites, ",") != "tcproutes,traffictargets" {
		t.Errorf("real writes %v, want the route then the TrafficTarget", realWrites)
	}
	l, lerr := dyn.Resource(tcpKV.gvr()).Namespace("shop").List(context.Background(), metav1.ListOptions{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	if len(l.Items) != 0 {
		t.Errorf("the TCPRoute created before the failure is still there: %v", l.Items)
	}
}

func mustInfo(k smi.Kind) smi.KindInfo {
	ki, ok := smi.Info(k)
	if !ok {
		panic(k)
	}
	return ki
}
