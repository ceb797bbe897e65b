package webhook

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/petfabric/petfabric/pkg/reconcile"
)

// The webhook's lookup and the reconcile loop register on one factory in either order (both
// index PVs by claim; cmd/webhook registers the loop first).
func TestLookupAndLoopShareOneFactory(t *testing.T) {
	for _, loopFirst := range []bool{true, false} {
		client := fake.NewClientset()
		f := informers.NewSharedInformerFactory(client, time.Minute)
		loop, err := reconcile.New(reconcile.Options{Client: client, Mutate: testCfg, ReportNamespace: "petfabric"})
		require.NoError(t, err)
		if loopFirst {
			require.NoError(t, loop.UseInformers(f))
		}
		_, err = NewClusterLookup(client, f)
		require.NoError(t, err, "loop first: %v", loopFirst)
		if !loopFirst {
			require.NoError(t, loop.UseInformers(f))
		}
	}
}
