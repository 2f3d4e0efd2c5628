// Package conversion serves the CRD conversion webhook for the SMI CRDs
// Trellis ships (manifests/crds): an http.Handler for
// apiextensions.k8s.io/v1 ConversionReviews that converts with smi.Convert.
//
// Stage: adapter between the apiserver and package smi; the controller
// mounts Handler at crds.ConversionPath on its TLS listener.
//
// Imports: the standard library, smi and Kubernetes API types.
package conversion

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellis-mesh/trellis/smi"
)

// maxBody bounds a ConversionReview (the apiserver sends at most a list page).
const maxBody = 64 << 20

// Handler answers ConversionReview requests.
type Handler struct{}

var _ http.Handler = Handler{}

// ServeHTTP implements http.Handler.
func (Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "conversion webhook: POST a ConversionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "conversion webhook: reading request body failed or body too large", http.StatusBadRequest)
		return
	}
	var review apiextensionsv1.ConversionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("conversion webhook: not a ConversionReview: %v", err), http.StatusBadRequest)
		return
	}
	review.Response = Review(review.Request)
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

// Review converts every object of req. One object that cannot be converted
// fails the review (the apiserver requires all or nothing) with a message
// naming it.
func Review(req *apiextensionsv1.ConversionRequest) *apiextensionsv1.ConversionResponse {
	resp := &apiextensionsv1.ConversionResponse{UID: req.UID}
	for _, raw := range req.Objects {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw.Raw); err != nil {
			resp.Result = failure(fmt.Errorf("decoding object: %w", err))
			resp.ConvertedObjects = nil
			return resp
		}
		out, err := smi.Convert(u, req.DesiredAPIVersion)
		if err != nil {
			resp.Result = failure(err)
			resp.ConvertedObjects = nil
			return resp
		}
		b, err := out.MarshalJSON()
		if err != nil {
			resp.Result = failure(err)
			resp.ConvertedObjects = nil
			return resp
		}
		resp.ConvertedObjects = append(resp.ConvertedObjects, runtime.RawExtension{Raw: b})
	}
	resp.Result = metav1.Status{Status: metav1.StatusSuccess}
	return resp
}

func failure(err error) metav1.Status {
	return metav1.Status{Status: metav1.StatusFailure, Message: err.Error(), Reason: metav1.StatusReasonBadRequest}
}
