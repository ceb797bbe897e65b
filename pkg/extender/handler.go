package extender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/serving"
)

// Source gives the handler a consistent view of claims, volumes and node reports. *Cache
// implements it; tests use a static one.
type Source interface {
	Read(fn func(lk placement.Lookup, st placement.State))
}

// HandlerOptions configure the extender's HTTP handler.
type HandlerOptions struct {
	// MaxBodyBytes bounds a request body (413 beyond). Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// PortalPolicy is placement.AllPortals (default) or placement.AnyPortal.
	PortalPolicy placement.PortalPolicy
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Log receives decision and error logs (slog.Default when nil).
	Log *slog.Logger
	// Metrics, when set, records latencies and decisions.
	Metrics *Metrics
}

// DefaultMaxBodyBytes fits a full-Node request for well over a thousand nodes (kube-scheduler
// sends at most numFeasibleNodesToFind, a few hundred on a big cluster) while keeping one
// request from taking unbounded memory.
const DefaultMaxBodyBytes = 32 << 20

// Routes served on the TLS port: <urlPrefix>/filter and <urlPrefix>/prioritize, i.e. the
// scheduler configuration uses filterVerb: filter and prioritizeVerb: prioritize.
const (
	FilterPath     = "/filter"
	PrioritizePath = "/prioritize"
)

type handler struct {
	src  Source
	opts HandlerOptions
	log  *slog.Logger
	now  func() time.Time
	bufs sync.Pool
	// names and passes pool the NodeNames and NodeRefs (*nameScratch) and the
	// Decision.Pass slices (*[]int) of requests.
	names, passes sync.Pool
	maxLen        int64
	mux           *http.ServeMux
	// known is the node names of the reports (see nodeNameSet), for the request reader to
	// intern NodeNames with; rebuild guards its rebuilding.
	known   atomic.Pointer[knownNames]
	rebuild sync.Mutex
}

// knownNames is an immutable set of node names (each mapped to the index's string for it
// and its NodeRef), made from the State at one node generation plus up to maxExtraNames
// names requests carried that have no report (a node without an agent is named in every
// request); requests read it without a lock.
type knownNames struct {
	generation uint64
	names      nameSet
	extras     int
}

// maxExtraNames bounds the names without a report the set takes in: a request naming
// nodes that do not exist cannot make it grow without end.
func maxExtraNames(nodes int) int { return 64 + nodes/8 }

// nodeNameSet is implemented by States that can list their nodes (placement.Index).
type nodeNameSet interface {
	NodeGeneration() uint64
	EachNode(fn func(node string, ref placement.NodeRef))
}

// knownNodes returns the current set of known names (nil before the first request).
func (h *handler) knownNodes() nameSet {
	if k := h.known.Load(); k != nil {
		return k.names
	}
	return nil
}

// learnNodes updates the known names after a request named nodes not in them: rebuilt
// from st when its set of nodes changed since the last build, else extended by the names
// the request missed (within maxExtraNames). Called with the State consistent (inside
// Source.Read); one request updates while the others go on with the old set (a miss
// costs only an allocation).
func (h *handler) learnNodes(a *args, st placement.State) {
	ns, ok := st.(nodeNameSet)
	if len(a.missedNames) == 0 || !ok {
		return
	}
	gen := ns.NodeGeneration()
	old := h.known.Load()
	if old != nil && old.generation == gen && old.extras >= maxExtraNames(len(old.names)-old.extras) {
		return
	}
	if !h.rebuild.TryLock() {
		return
	}
	defer h.rebuild.Unlock()
	old = h.known.Load()
	next := &knownNames{generation: gen}
	if old != nil && old.generation == gen {
		next.names, next.extras = maps.Clone(old.names), old.extras
	} else {
		next.names = make(nameSet, len(h.knownNodes())+len(a.missedNames))
		ns.EachNode(func(node string, ref placement.NodeRef) { next.names[node] = knownName{node, ref} })
	}
	limit := maxExtraNames(len(next.names) - next.extras)
	for _, name := range a.missedNames {
		if next.extras >= limit {
			break
		}
		if _, dup := next.names[name]; !dup {
			next.names[name] = knownName{name: name}
			next.extras++
		}
	}
	h.known.Store(next)
}

// NewHandler returns the scheduler-facing handler: POST /filter and POST /prioritize.
func NewHandler(src Source, opts HandlerOptions) http.Handler {
	h := &handler{src: src, opts: opts, log: opts.Log, now: opts.Now, maxLen: opts.MaxBodyBytes}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.maxLen <= 0 {
		h.maxLen = DefaultMaxBodyBytes
	}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST "+FilterPath, h.filter)
	h.mux.HandleFunc("POST "+PrioritizePath, h.prioritize)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// requestError is an HTTP error status with a message for the caller.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return e.msg }

// decode reads and parses the body into a. The returned buffer holds the body (a.Nodes
// points into it) and goes back to the pool when the caller is done.
func (h *handler) decode(r *http.Request, a *args) (*bytes.Buffer, error) {
	if r.ContentLength > h.maxLen {
		return nil, &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, h.maxLen)}
	}
	buf := h.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	if r.ContentLength > 0 {
		// One allocation of the announced size instead of doubling (and copying) a
		// 17 MB body of 5,000 Nodes up from 512 bytes.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(nil, r.Body, h.maxLen)); err != nil {
		h.bufs.Put(buf)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", h.maxLen)}
		}
		return nil, &requestError{http.StatusBadRequest, "reading request body: " + err.Error()}
	}
	scratch, _ := h.names.Get().(*nameScratch)
	a.scratch = scratch
	if err := decodeArgsInto(buf.Bytes(), a, h.knownNodes(), scratch); err != nil {
		h.releaseNames(a)
		h.bufs.Put(buf)
		return nil, &requestError{http.StatusBadRequest, "malformed ExtenderArgs JSON: " + err.Error()}
	}
	if a.list != nil && a.list.chunks > 1 && h.opts.Metrics != nil {
		h.opts.Metrics.chunked.Inc()
	}
	return buf, nil
}

// releaseNames gives the request's names and NodeRefs back to the pool: the slices the
// reader filled when they have more room than the scratch it was offered (they have room
// for the largest request seen), and the Decision.Pass slice. Called once the answer is
// written; both are cleared so that the pool holds neither node names nor index entries.
func (h *handler) releaseNames(a *args) {
	if a.pass != nil {
		p := a.pass[:0]
		h.passes.Put(&p)
	}
	s := a.scratch
	if s == nil {
		s = &nameScratch{}
	}
	if a.NodeNames != nil && cap(*a.NodeNames) > cap(s.names) {
		s.names = *a.NodeNames
	}
	if cap(a.refs) > cap(s.refs) {
		s.refs = a.refs
	}
	if cap(s.names) == 0 && cap(s.refs) == 0 {
		return
	}
	clear(s.names[:cap(s.names)])
	clear(s.refs[:cap(s.refs)])
	s.names, s.refs = s.names[:0], s.refs[:0]
	h.names.Put(s)
}

func (h *handler) release(buf *bytes.Buffer) {
	// Buffers are kept up to the body limit (plus the reader's slack and the answer's
	// messages): a scheduler in full-Node mode sends bodies of several megabytes on every
	// pod, and dropping them made each such request allocate its body and its answer anew.
	// sync.Pool lets idle buffers go at the next garbage collections.
	if buf != nil && int64(buf.Cap()) <= h.maxLen+h.maxLen/8+bytes.MinRead {
		h.bufs.Put(buf)
	}
}

// withPodLogger puts the request-scoped logger in ctx: every line about this request names
// the pod being scheduled.
func (h *handler) withPodLogger(ctx context.Context, a *args) context.Context {
	if a.Pod == nil {
		return ctx
	}
	return serving.WithLogger(ctx, h.log.With("pod", a.Pod.Namespace+"/"+a.Pod.Name))
}

func (h *handler) fail(ctx context.Context, w http.ResponseWriter, verb string, start time.Time, err error) {
	code := http.StatusBadRequest
	var re *requestError
	if errors.As(err, &re) {
		code = re.code
	}
	serving.LoggerFrom(ctx, h.log).Warn("rejected extender request", "verb", verb, "code", code, "err", err)
	http.Error(w, err.Error(), code)
	if h.opts.Metrics != nil {
		h.opts.Metrics.observe(verb, "error", code, time.Since(start))
	}
}

func (h *handler) reply(w http.ResponseWriter, verb, path string, start time.Time, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	// A known length lets the answer go out as it is rather than in chunks.
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	if h.opts.Metrics != nil {
		h.opts.Metrics.observe(verb, path, http.StatusOK, time.Since(start))
	}
}

func (h *handler) filter(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var a args
	buf, err := h.decode(r, &a)
	if err != nil {
		h.fail(r.Context(), w, "filter", start, err)
		return
	}
	defer h.release(buf)
	defer h.releaseNames(&a)
	res, path := h.decideFilter(h.withPodLogger(r.Context(), &a), &a)
	// The answer is at most the request's size plus the failure messages; it is built in a
	// pooled buffer like the request's.
	ob := h.bufs.Get().(*bytes.Buffer)
	ob.Reset()
	ob.Grow(len(buf.Bytes()) + 256)
	out := appendFilterResult(ob.AvailableBuffer(), res)
	h.reply(w, "filter", path, start, out)
	if cap(out) > ob.Cap() {
		ob = bytes.NewBuffer(out[:0]) // keep the grown array for the next answer
	}
	h.release(ob)
}

// decideFilter returns the answer and the metrics path label.
func (h *handler) decideFilter(ctx context.Context, a *args) (*filterResult, string) {
	res := &filterResult{}
	namesMode := a.NodeNames != nil
	switch {
	case a.Pod == nil:
		res.err = errNoPod.Error()
		return res, "error"
	case !namesMode && !a.hasNodes():
		res.err = "ExtenderArgs has neither NodeNames (nodeCacheCapable: true) nor Nodes (nodeCacheCapable: false)"
		return res, "error"
	}
	pod := a.Pod.Namespace + "/" + a.Pod.Name
	var vols []placement.Volume
	var verr error
	h.src.Read(func(lk placement.Lookup, st placement.State) {
		h.learnNodes(a, st)
		vols, verr = placement.PodVolumes(a.Pod, lk)
	})
	if verr != nil {
		res.err = fmt.Sprintf("pod %s: %v", pod, verr)
		serving.LoggerFrom(ctx, h.log).Warn("cannot place pod", "err", verr)
		return res, "error"
	}
	if len(vols) == 0 {
		// Fast path: no Datera volume, nothing to decide. Echo the input untouched.
		if namesMode {
			res.names, res.hasNames, res.namesPlain = *a.NodeNames, true, a.namesPlain
		} else {
			res.nodesRaw = a.Nodes
		}
		if h.opts.Metrics != nil {
			h.opts.Metrics.decisions.WithLabelValues("fast_path").Inc()
		}
		return res, "fast"
	}

	var names []string
	if namesMode {
		names = *a.NodeNames
	} else {
		res.list = a.list
		names = a.list.names
	}
	var d placement.Decision
	var explained string
	now := h.now()
	log := serving.LoggerFrom(ctx, h.log)
	h.src.Read(func(_ placement.Lookup, st placement.State) {
		var pass []int
		if p, ok := h.passes.Get().(*[]int); ok {
			pass = *p
		}
		// a.refs are NodeNames' (the reader leaves them nil for Nodes items).
		d = placement.FilterRefs(pass, now, vols, names, a.refs, st, h.opts.PortalPolicy)
		a.pass = d.Pass
		// The answer's messages are the same for every node with one cause (so that the
		// scheduler's event aggregates); the nodes and their report ages go to this log.
		if log.Enabled(ctx, filterLogLevel(d)) {
			explained = placement.Explain(now, d, names, st, explainExamples)
		}
	})
	if namesMode {
		res.hasNames, res.namesPass, res.names, res.namesPlain = true, true, names, a.namesPlain
	}
	res.pass = d.Pass
	// Nothing a preemption could change makes a node reachable, so every failure is
	// unresolvable (kube-scheduler then skips preemption attempts on these nodes).
	res.unresolvable = d.Failed
	if h.opts.Metrics != nil {
		for reason, n := range d.Reasons {
			h.opts.Metrics.decisions.WithLabelValues(string(reason)).Add(float64(n))
		}
	}
	log.Log(ctx, filterLogLevel(d), "filtered nodes", "volumes", len(vols), "nodes", len(names),
		"passed", len(d.Pass), "failed", len(d.Failed), "summary", explained)
	return res, "full"
}

// explainExamples is how many nodes the filter log names per failure message.
const explainExamples = 3

// filterLogLevel logs a decision that leaves the pod nowhere to go at Info, others at Debug.
func filterLogLevel(d placement.Decision) slog.Level {
	if len(d.Pass) == 0 {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (h *handler) prioritize(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var a args
	buf, err := h.decode(r, &a)
	if err != nil {
		h.fail(r.Context(), w, "prioritize", start, err)
		return
	}
	defer h.release(buf)
	defer h.releaseNames(&a)
	// HostPriorityList has no error field: a bad request can only be an HTTP error, which
	// kube-scheduler logs and treats as "no scores from this extender".
	if a.Pod == nil {
		h.fail(r.Context(), w, "prioritize", start, &requestError{http.StatusBadRequest, errNoPod.Error()})
		return
	}
	ctx := h.withPodLogger(r.Context(), &a)
	var names []string
	switch {
	case a.NodeNames != nil:
		names = *a.NodeNames
	case a.hasNodes():
		names = a.list.names
	default:
		h.fail(ctx, w, "prioritize", start, &requestError{http.StatusBadRequest, "ExtenderArgs has neither NodeNames nor Nodes"})
		return
	}
	var vols []placement.Volume
	var verr error
	var scores []int64
	now := h.now()
	h.src.Read(func(lk placement.Lookup, st placement.State) {
		h.learnNodes(&a, st)
		vols, verr = placement.PodVolumes(a.Pod, lk)
		if verr == nil {
			scores = placement.Prioritize(now, vols, names, st)
		}
	})
	if verr != nil {
		h.fail(ctx, w, "prioritize", start, &requestError{http.StatusBadRequest, fmt.Sprintf("pod %s/%s: %v", a.Pod.Namespace, a.Pod.Name, verr)})
		return
	}
	path := "full"
	if len(vols) == 0 {
		path = "fast"
	}
	out := appendPriorities(make([]byte, 0, len(names)*32+2), names, scores, a.NodeNames != nil && a.namesPlain)
	h.reply(w, "prioritize", path, start, out)
}
