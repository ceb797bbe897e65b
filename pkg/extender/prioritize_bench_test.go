package extender

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// stdlibPrioritizeFloor is stdlibFloor's counterpart for prioritize: decode ExtenderArgs
// with encoding/json and score every node 0, encoded with encoding/json. It ranks nothing,
// so it is the floor a real prioritize handler is compared with.
var stdlibPrioritizeFloor = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var a extenderv1.ExtenderArgs
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var hosts []string
	if a.NodeNames != nil {
		hosts = *a.NodeNames
	} else if a.Nodes != nil {
		for _, n := range a.Nodes.Items {
			hosts = append(hosts, n.Name)
		}
	}
	out := make(extenderv1.HostPriorityList, len(hosts))
	for i, h := range hosts {
		out[i] = extenderv1.HostPriority{Host: h}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
})

// BenchmarkPrioritizeRows is BenchmarkRows for prioritize: 500 and 5,000 node names (the
// chart's nodeCacheCapable mode; a pod with 3 Datera volumes), the extender's prioritize
// next to the encoding/json decode+score-0 floor over the same HTTP stack, body and load
// tool, in one run. Each sub-benchmark reports req/s, p50-µs and p99-µs; make bench's table
// puts petfabric-prioritize next to floor-encoding-json.
func BenchmarkPrioritizeRows(b *testing.B) {
	src, pod, names := benchState(b, 5000)
	srv := serve(b, NewHandler(src, HandlerOptions{Log: quiet(), Metrics: NewMetrics()}))
	floorSrv := serve(b, stdlibPrioritizeFloor)
	const workers = 4
	for _, n := range []int{500, 5000} {
		nn := names[:n]
		body := mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn})
		shape := fmt.Sprintf("names%d", n)
		b.Run(shape+"/floor-encoding-json", func(b *testing.B) { load(b, floorSrv.URL, body, workers) })
		b.Run(shape+"/petfabric-prioritize", func(b *testing.B) { load(b, srv.URL+PrioritizePath, body, workers) })
	}
}
