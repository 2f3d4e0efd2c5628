package clienv

import (
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// APIError classifies an error from the apiserver once, for the exit code
// and a hint: what names the operation ("create TrafficSplit shop/web").
func APIError(what string, err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	var oe *net.OpError
	switch {
	case apierrors.IsForbidden(err):
		return Fail(ExitForbidden, fmt.Errorf("%s: %w", what, err), "ask a cluster admin for the RBAC this needs, or use a context that has it (--context)")
	case apierrors.IsUnauthorized(err):
		return Fail(ExitConfig, fmt.Errorf("%s: %w", what, err), "your credentials were refused; refresh the kubeconfig")
	case apierrors.IsNotFound(err):
		return Fail(ExitNotFound, fmt.Errorf("%s: %w", what, err), "")
	case errors.As(err, &oe), errors.As(err, &ne):
		return Fail(ExitConfig, fmt.Errorf("%s: cannot reach the cluster: %w", what, err), "check --kubeconfig/--context and that the cluster is up")
	}
	return fmt.Errorf("%s: %w", what, err)
}
