package app

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/controller/dns"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/shadow"
)

// Uninstall undoes what the controller wrote: the CoreDNS block and every
// shadow Service. Run it after stopping the controllers (otherwise the
// leader writes them again). It reports what it did.
func Uninstall(ctx context.Context, kube kubernetes.Interface, s settings.Settings) (string, error) {
	var errs []error
	var out string
	if s.CoreDNS.Enabled {
		cd := &dns.CoreDNS{Client: kube, Namespace: s.CoreDNS.Namespace, ConfigMap: s.CoreDNS.ConfigMap, Key: s.CoreDNS.Key}
		changed, err := cd.Uninstall(ctx)
		var ue *dns.UnsupportedError
		switch {
		case errors.As(err, &ue):
			out += fmt.Sprintf("CoreDNS: nothing to remove (%v)\n", err)
		case err != nil:
			errs = append(errs, err)
		case changed:
			out += fmt.Sprintf("CoreDNS: removed the trellis-mesh block from %s/%s\n", s.CoreDNS.Namespace, s.CoreDNS.ConfigMap)
		default:
			out += "CoreDNS: no trellis-mesh block present\n"
		}
	}
	n, err := shadow.DeleteAll(ctx, kube, s.MeshNamespace)
	if err != nil {
		errs = append(errs, err)
	}
	out += fmt.Sprintf("shadow Services: deleted %d in %s\n", n, s.MeshNamespace)
	return out, errors.Join(errs...)
}
