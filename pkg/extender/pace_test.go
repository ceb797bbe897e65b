package extender

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/petfabric/petfabric/pkg/placement"
)

// discard is a ResponseWriter that keeps the status, the headers and the body.
type discard struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (d *discard) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (d *discard) Write(b []byte) (int, error) { return d.body.Write(b) }
func (d *discard) WriteHeader(code int)        { d.code = code }

// serveDirect runs one request through h without a network.
func serveDirect(h http.Handler, path string, body []byte, w *discard) {
	w.code, w.h = 0, nil
	w.body.Reset()
	r, _ := http.NewRequest(http.MethodPost, "http://extender"+path, bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	h.ServeHTTP(w, r)
}

// requestAllocs is the allocations of one filter request of body through a handler that
// already served one (its name set is built), with the HTTP machinery's own share (a
// request through a handler that does nothing) taken off.
func requestAllocs(t testing.TB, h http.Handler, path string, body []byte) float64 {
	var w discard
	serveDirect(h, path, body, &w)
	require.Equal(t, 0, w.code, "%s", w.body.String())
	got := testing.AllocsPerRun(20, func() { serveDirect(h, path, body, &w) })
	base := testing.AllocsPerRun(20, func() {
		serveDirect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }), path, body, &w)
	})
	return got - base
}

// TestNoAllocationPerNode: a request's allocations do not grow with its nodes. 500 and
// 5,000 names (or full Nodes) of known nodes, ~8% failing, cost the same number of
// allocations give or take the failure map's growth: none is made per node.
func TestNoAllocationPerNode(t *testing.T) {
	src, pod, names := benchState(t, 5000)
	podJSON := string(mustJSON(t, pod))
	h := NewHandler(src, HandlerOptions{Log: quiet(), Metrics: NewMetrics()})
	namesBody := func(n int) []byte {
		nn := names[:n]
		return mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn})
	}
	for _, path := range []string{FilterPath, PrioritizePath} {
		small, big := requestAllocs(t, h, path, namesBody(500)), requestAllocs(t, h, path, namesBody(5000))
		t.Logf("%s names: %.0f allocations for 500 nodes, %.0f for 5,000", path, small, big)
		assert.Less(t, big, small+40, "%s: allocations grow with the names", path)
	}
	small := requestAllocs(t, h, FilterPath, fullNodesBody(podJSON, names[:500]))
	big := requestAllocs(t, h, FilterPath, fullNodesBody(podJSON, names[:5000]))
	t.Logf("full Nodes: %.0f allocations for 500 nodes, %.0f for 5,000", small, big)
	assert.Less(t, big, small+40, "full Nodes: allocations grow with the nodes")
}

// TestNamesInterned: after the first request the names of known nodes are the index's own
// strings (no copy per name); names unknown to the cache are still read, allocated.
func TestNamesInterned(t *testing.T) {
	src, pod, names := benchState(t, 300)
	h := NewHandler(src, HandlerOptions{Log: quiet()}).(*handler)
	var w discard
	body := mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("p"), NodeNames: &names})
	require.Nil(t, h.knownNodes())
	serveDirect(h, FilterPath, body, &w) // builds the name set
	known := h.knownNodes()
	// The nodes with a report, and the three without one (every 100th) that the request
	// named: a node without an agent is named in every request.
	require.Equal(t, 300, len(known))
	_, extra := known[names[99]]
	assert.True(t, extra)

	with := append([]string{"unknown-node", "worker-00001.dc1.example.com"}, names[:3]...)
	var a args
	require.NoError(t, decodeArgsInto(mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &with}), &a, known, nil))
	assert.Equal(t, with, *a.NodeNames)
	assert.Equal(t, []string{"unknown-node"}, a.missedNames, "only the unknown name is allocated")
	assert.True(t, a.namesPlain)
	nr, _ := src.st.NodeReport(names[1])
	assert.True(t, unsafe.StringData(nr.Node) == unsafe.StringData((*a.NodeNames)[1]), "a known name is the index's string")
	assert.True(t, unsafe.StringData(with[1]) != unsafe.StringData((*a.NodeNames)[1]))
	// Each name comes with its node's NodeRef (zero for the unknown one): the filter judges
	// the same as by name.
	require.Len(t, a.refs, len(with))
	assert.Equal(t, placement.NodeRef{}, a.refs[0])
	assert.NotEqual(t, placement.NodeRef{}, a.refs[1])
	vols, err := placement.PodVolumes(pod, src.lk)
	require.NoError(t, err)
	now := time.Now()
	assert.Equal(t, placement.Filter(now, vols, with, src.st, placement.AllPortals),
		placement.FilterRefs(nil, now, vols, with, a.refs, src.st, placement.AllPortals))
}

// TestNamesEchoedExactly: names that need escaping, names that are not ASCII, names with
// escapes in the request and names unknown to the cache come back meaning what they meant;
// plain names come back byte for byte as they were sent.
func TestNamesEchoedExactly(t *testing.T) {
	src, pod, names := benchState(t, 200)
	h := NewHandler(src, HandlerOptions{Log: quiet()})
	odd := []string{"a<b>&c", "é-node", "tab\there", `quo"te`, "back\\slash", "\u2028line", "unknown-node.example.com"}
	all := append(append([]string{}, names[:5]...), odd...)
	for _, path := range []string{FilterPath, PrioritizePath} {
		// Twice: the first request builds the name set, the second reads through it.
		for range 2 {
			var w discard
			body := mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &all})
			serveDirect(h, path, body, &w)
			require.Equal(t, 0, w.code, w.body.String())
			// Each name as encoding/json writes it appears in the answer.
			for _, n := range all {
				enc, _ := json.Marshal(n)
				assert.Contains(t, w.body.String(), string(enc), "%s: %q", path, n)
			}
			if path == FilterPath {
				var res extenderv1.ExtenderFilterResult
				require.NoError(t, json.Unmarshal(w.body.Bytes(), &res))
				require.NotNil(t, res.NodeNames)
				// The bench state's nodes pass; the odd ones have no report.
				assert.Equal(t, names[:5], *res.NodeNames)
				for _, n := range odd {
					assert.Contains(t, res.FailedAndUnresolvableNodes, n)
				}
			} else {
				var res extenderv1.HostPriorityList
				require.NoError(t, json.Unmarshal(w.body.Bytes(), &res))
				require.Len(t, res, len(all))
				for i, hp := range res {
					assert.Equal(t, all[i], hp.Host)
				}
			}
		}
	}
	// A name sent with escapes for plain characters reads as the plain name, and the
	// answer names it the way encoding/json would.
	var w discard
	serveDirect(h, FilterPath, []byte(`{"Pod":`+string(mustJSON(t, pod))+`,"NodeNames":["worker-0000\u0031.dc1.example.com","`+names[2]+`"]}`), &w)
	assert.Contains(t, w.body.String(), `"NodeNames":["`+names[1]+`","`+names[2]+`"]`)
	// Plain names: the answer's array is the request's bytes (a pod without Datera
	// volumes: every node passes).
	plain := names[:50]
	req := mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("p"), NodeNames: &plain})
	serveDirect(h, FilterPath, req, &w)
	enc, _ := json.Marshal(plain)
	assert.Contains(t, w.body.String(), `"NodeNames":`+string(enc)+`,`)
	assert.Contains(t, string(req), string(enc))
}

// TestAnswerHasContentLength: answers are sent with their length, not chunked.
func TestAnswerHasContentLength(t *testing.T) {
	src, _, names := benchState(t, 20)
	h := NewHandler(src, HandlerOptions{Log: quiet()})
	var w discard
	serveDirect(h, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("p"), NodeNames: &names}), &w)
	assert.Equal(t, fmt.Sprint(w.body.Len()), w.Header().Get("Content-Length"))
}

// TestHugeBodyPooled: a full-Node body of tens of megabytes (under the limit) is answered
// right, twice through the same pooled buffers, and one over the limit is refused.
func TestHugeBodyPooled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 23 MB body")
	}
	src, pod, names := benchState(t, 5000)
	podJSON := string(mustJSON(t, pod))
	twice := append(append([]string{}, names...), names...)
	body := fullNodesBody(podJSON, twice) // 10,000 items, about 23 MB
	require.Greater(t, len(body), 16<<20)
	h := NewHandler(src, HandlerOptions{Log: quiet()})
	var first []byte
	for i := range 2 {
		var w discard
		serveDirect(h, FilterPath, body, &w)
		require.Equal(t, 0, w.code, w.body.String())
		if i == 0 {
			first = bytes.Clone(w.body.Bytes())
			var res extenderv1.ExtenderFilterResult
			require.NoError(t, json.Unmarshal(first, &res))
			require.NotNil(t, res.Nodes)
			assert.Greater(t, len(res.Nodes.Items), 9000)
			// Items come back byte for byte.
			var raw struct {
				Nodes struct{ Items []json.RawMessage }
			}
			require.NoError(t, json.Unmarshal(first, &raw))
			assert.True(t, bytes.Contains(body, raw.Nodes.Items[0]))
			continue
		}
		assert.Equal(t, first, w.body.Bytes(), "the second answer through pooled buffers is the first")
	}
	small := NewHandler(src, HandlerOptions{Log: quiet(), MaxBodyBytes: int64(len(body) - 1)})
	var w discard
	serveDirect(small, FilterPath, body, &w)
	assert.Equal(t, http.StatusRequestEntityTooLarge, w.code)
	assert.True(t, strings.Contains(w.body.String(), "exceeds the limit"))
}

// BenchmarkHandlerDirect is the handler's own cost per request, without a network or
// clients: the body read from memory, decoded, decided and answered, with allocations.
func BenchmarkHandlerDirect(b *testing.B) {
	src, pod, names := benchState(b, 5000)
	podJSON := string(mustMarshal(b, pod))
	h := NewHandler(src, HandlerOptions{Log: quiet(), Metrics: NewMetrics()})
	for _, n := range []int{500, 5000} {
		nn := names[:n]
		for _, tc := range []struct {
			name, path string
			body       []byte
		}{
			{fmt.Sprintf("names%d/filter", n), FilterPath, mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn})},
			{fmt.Sprintf("names%d/prioritize", n), PrioritizePath, mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn})},
			{fmt.Sprintf("fullNodes%d/filter", n), FilterPath, fullNodesBody(podJSON, nn)},
		} {
			b.Run(tc.name, func(b *testing.B) {
				var w discard
				serveDirect(h, tc.path, tc.body, &w)
				b.SetBytes(int64(len(tc.body)))
				b.ReportAllocs()
				for b.Loop() {
					serveDirect(h, tc.path, tc.body, &w)
				}
			})
		}
	}
}

// TestKnownNamesFollowTheIndex: a node that gains a report after the set was built joins it
// at the next request naming it; names without a report join only up to a bound, however
// many a request carries.
func TestKnownNamesFollowTheIndex(t *testing.T) {
	src, pod, names := benchState(t, 100)
	h := NewHandler(src, HandlerOptions{Log: quiet()}).(*handler)
	var w discard
	post := func(nn []string) {
		serveDirect(h, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn}), &w)
		require.Equal(t, 0, w.code, w.body.String())
	}
	post(names)
	require.Equal(t, 100, len(h.knownNodes()))

	// A new node gets a report: the generation moves, the next request rebuilds the set.
	nr, _ := src.st.NodeReport(names[0])
	fresh := *nr
	fresh.Node = "worker-new.dc1.example.com"
	src.st.SetReport(&fresh)
	post(append([]string{"worker-new.dc1.example.com"}, names...))
	known := h.knownNodes()
	got, ok := known["worker-new.dc1.example.com"]
	require.True(t, ok)
	held, _ := src.st.NodeReport("worker-new.dc1.example.com")
	assert.True(t, unsafe.StringData(got.name) == unsafe.StringData(held.Node), "the index's string")
	assert.Contains(t, w.body.String(), `"worker-new.dc1.example.com"`)

	// Thousands of names no node reports: the set takes in at most 64 + nodes/8.
	var bogus []string
	for i := range 3000 {
		bogus = append(bogus, fmt.Sprintf("no-such-node-%d", i))
	}
	for range 5 {
		post(bogus)
	}
	assert.LessOrEqual(t, len(h.knownNodes()), 101+maxExtraNames(101))
	var a args
	require.NoError(t, decodeArgsInto(mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &bogus}), &a, h.knownNodes(), nil))
	assert.Len(t, a.missedNames, maxMissed, "a request reports a bounded number of unknown names")
	assert.Equal(t, bogus, *a.NodeNames)
}

// TestPooledNamesStayWithTheirRequest: concurrent requests of different node lists through
// one handler (pooled names slices and buffers) each get the answer for their own list.
func TestPooledNamesStayWithTheirRequest(t *testing.T) {
	src, _, names := benchState(t, 400)
	h := NewHandler(src, HandlerOptions{Log: quiet()})
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			var w discard
			for i := range 40 {
				from := (g*37 + i*11) % 300
				nn := names[from : from+1+(g*13+i)%100]
				serveDirect(h, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("p"), NodeNames: &nn}), &w)
				var res extenderv1.ExtenderFilterResult
				if err := json.Unmarshal(w.body.Bytes(), &res); err != nil || res.NodeNames == nil {
					done <- fmt.Errorf("bad answer %q: %v", w.body.String(), err)
					return
				}
				if strings.Join(*res.NodeNames, ",") != strings.Join(nn, ",") {
					done <- fmt.Errorf("request of %d names got %d back", len(nn), len(*res.NodeNames))
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-done)
	}
}
