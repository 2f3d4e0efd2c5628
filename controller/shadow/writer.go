package shadow

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// Writer applies plans. Only the leader runs one.
type Writer struct {
	Client    kubernetes.Interface
	Namespace string
	Log       *zap.Logger
}

// Result counts what Sync did.
type Result struct{ Created, Updated, Deleted int }

// Sync makes the shadow Services in the cluster equal desired. existing is
// the cache's view. Errors on single objects are collected; the rest are
// still applied.
func (w *Writer) Sync(ctx context.Context, desired, existing []*corev1.Service) (Result, error) {
	var res Result
	var errs []error
	cur := make(map[string]*corev1.Service, len(existing))
	for _, s := range existing {
		cur[s.Name] = s
	}
	want := make(map[string]bool, len(desired))
	opts := metav1.CreateOptions{FieldManager: ManagedBy}
	for _, d := range desired {
		want[d.Name] = true
		c, ok := cur[d.Name]
		switch {
		case !ok:
			_, err := w.Client.CoreV1().Services(w.Namespace).Create(ctx, d, opts)
			if apierrors.IsAlreadyExists(err) {
				continue // the cache is behind; the next pass compares
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("create shadow Service %s/%s for %s: %w", w.Namespace, d.Name, d.Annotations[AnnotationOf], err))
				continue
			}
			res.Created++
		case NeedsUpdate(c, d):
			_, err := w.Client.CoreV1().Services(w.Namespace).Update(ctx, Merge(c, d), metav1.UpdateOptions{FieldManager: ManagedBy})
			if err != nil {
				errs = append(errs, fmt.Errorf("update shadow Service %s/%s for %s: %w", w.Namespace, d.Name, d.Annotations[AnnotationOf], err))
				continue
			}
			res.Updated++
		}
	}
	for _, c := range existing {
		if want[c.Name] {
			continue
		}
		err := w.Client.CoreV1().Services(w.Namespace).Delete(ctx, c.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete shadow Service %s/%s: %w", w.Namespace, c.Name, err))
			continue
		}
		res.Deleted++
		if w.Log != nil {
			ns, name := Of(c)
			w.Log.Info("shadow Service removed", zap.String("shadow", c.Name), zap.String("service", ns+"/"+name))
		}
	}
	return res, errors.Join(errs...)
}

// DeleteAll removes every shadow Service (uninstall), listing from the
// apiserver rather than a cache.
func DeleteAll(ctx context.Context, c kubernetes.Interface, ns string) (int, error) {
	sel := labels.Set{LabelManagedBy: ManagedBy}.String()
	list, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return 0, fmt.Errorf("list shadow Services in %s: %w", ns, err)
	}
	n := 0
	var errs []error
	for i := range list.Items {
		s := &list.Items[i]
		if !IsShadow(s, ns) {
			continue
		}
		if err := c.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete shadow Service %s/%s: %w", ns, s.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

var _ = corev1.ProtocolTCP
