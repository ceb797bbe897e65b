package cachetransform

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestStripManagedFields(t *testing.T) {
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{
		Name: "datera-shop.data-web-0", Labels: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "petfabric-webhook", Operation: metav1.ManagedFieldsOperationUpdate}},
	}}
	for _, tc := range []struct {
		name string
		in   any
		want any
	}{
		{"object with metadata", pv, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "datera-shop.data-web-0", Labels: map[string]string{"a": "b"}}}},
		{"tombstone passes through", cache.DeletedFinalStateUnknown{Key: "k"}, cache.DeletedFinalStateUnknown{Key: "k"}},
		{"non-object passes through", "x", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StripManagedFields(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
