package clienv

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// PodGet reads path from a pod's port through the apiserver's pods/proxy
// subresource, so it works from outside the cluster network and is guarded
// by RBAC (get pods/proxy in the pod's namespace). The apiserver drops the
// caller's Authorization header; pass credentials meant for the pod in
// header under another name.
func (e *Env) PodGet(ctx context.Context, ns, pod string, port int, path string, header http.Header) ([]byte, error) {
	kube, err := e.Kube()
	if err != nil {
		return nil, err
	}
	req := kube.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").
		Name(pod + ":" + strconv.Itoa(port)).SubResource("proxy").Suffix(path)
	for k, vv := range header {
		for _, v := range vv {
			req = req.SetHeader(k, v)
		}
	}
	b, err := req.DoRaw(ctx)
	if err != nil {
		return b, APIError(fmt.Sprintf("GET %s from pod %s/%s port %d", path, ns, pod, port), err)
	}
	return b, nil
}
