package extendere2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/test/cluster"
)

// TestFullNodesAtScale: in full-Node mode (nodeCacheCapable: false) kube-scheduler sends
// every feasible Node whole. With 300 nodes of about 4.5 kB each (and every node scored)
// the body passes a megabyte, where the extender scans the items in chunks on several cores
// (pkg/extender/itemsparallel.go). Through the real scheduler the pets still land only on
// the nodes that report reachable portals, the FailedScheduling summary counts the other
// 297 by reason, and the extender's metrics count the chunked scans.
func TestFullNodesAtScale(t *testing.T) {
	const nodes = 300
	pad := strings.Repeat("x", 4000) // a node as big as a real one with images and labels
	specs := make([]cluster.NodeSpec, nodes)
	for i := range specs {
		specs[i] = cluster.NodeSpec{Name: fmt.Sprintf("worker-%03d", i), Annotations: map[string]string{"petfabric.test/pad": pad}}
	}
	e := startNodes(t, runInProcess, false, ptr.To[int32](100), specs)

	for i := range 2 {
		e.volume(t, fmt.Sprintf("data-web-%d", i), fmt.Sprintf("pf-web-%d", i), nil, true)
	}
	e.pod(t, "web-0", "data-web-0")
	msg := e.failedScheduling(t, "web-0", "0/300 nodes are available", "300 no reachability report")
	t.Logf("FailedScheduling: %.300s", msg)

	good := map[string]bool{"worker-017": true, "worker-211": true, "worker-298": true}
	for n := range good {
		e.report(t, n, reachable, 0, time.Hour)
	}
	e.touchNode(t, "worker-017")
	assert.True(t, good[e.waitScheduled(t, "web-0")])
	e.pod(t, "web-1", "data-web-1")
	assert.True(t, good[e.waitScheduled(t, "web-1")])

	assert.GreaterOrEqual(t, e.metric(t, "petfabric_extender_chunked_scans_total"), 2.0, "the scheduler's bodies were scanned in chunks")
}
