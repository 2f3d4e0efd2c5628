package author

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/smi"
)

// Labels and annotations on the objects the CLI creates.
const (
	// ManagedByLabel marks every object kubectl-trellis created, with value
	// ManagedBy. deny and split only ever delete objects that carry it.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "kubectl-trellis"
	// ForAnnotation on a route object the CLI created names the object it
	// was created for: "TrafficTarget/NAME" or "TrafficSplit/NAME" (same
	// namespace). Only that object's commands update or delete it.
	ForAnnotation = "trellis.io/created-for"
	// FieldManager is the field manager of every write.
	FieldManager = "kubectl-trellis"
)

// maxGeneratedName keeps generated names short enough to read in kubectl
// get and safe wherever a name ends up in a label value.
const maxGeneratedName = 63

// fitName returns s when it is a short enough DNS subdomain; otherwise a
// prefix of it plus a hash of the whole, so distinct inputs keep distinct
// names.
func fitName(s string) string {
	if len(s) <= maxGeneratedName && len(validation.IsDNS1123Subdomain(s)) == 0 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])[:10]
	prefix := s
	if len(prefix) > maxGeneratedName-len(h)-1 {
		prefix = prefix[:maxGeneratedName-len(h)-1]
	}
	prefix = strings.TrimRight(prefix, "-.")
	name := prefix + "-" + h
	if len(validation.IsDNS1123Subdomain(name)) != 0 {
		return "trellis-" + h
	}
	return name
}

// targetName is the default name of the TrafficTarget (and its route
// objects) that allow creates for one source and destination:
// DEST-from-SOURCENAMESPACE-SOURCE, in the destination's namespace.
func targetName(src, dst smi.Identity) string {
	return fitName(dst.Name + "-from-" + src.Namespace + "-" + src.Name)
}

// splitGroupName is the name of the HTTPRouteGroup that holds a split's
// --match conditions: SPLIT-match.
func splitGroupName(split string) string {
	return fitName(split + "-match")
}

// forValue is the ForAnnotation value for an owner.
func forValue(kind smi.Kind, name string) string { return string(kind) + "/" + name }
