// Package cachetransform holds the informer transform every petfabric cache applies: managed
// fields (server-side apply bookkeeping) are dropped before an object is stored. No petfabric
// program reads them, and they are often the largest part of a small object such as a
// PersistentVolume or a claim (see the informer memory test in test/e2e for the bytes saved).
package cachetransform

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
)

// StripManagedFields is a cache.TransformFunc: it clears metadata.managedFields of any object
// with metadata, in place (the informer owns the object it hands over), and passes anything
// else through.
func StripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Option applies StripManagedFields to every informer of a factory.
func Option() informers.SharedInformerOption { return informers.WithTransform(StripManagedFields) }
