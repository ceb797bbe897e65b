package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	testNS      = "app"
	testClass   = "datera-gold"
	secretNS    = "petfabric-system"
	secretName  = "datera-creds"
	testCluster = "k1"
)

var (
	t0      = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	testCfg = mutate.Config{ClusterID: testCluster}
)

// nsUID is the UID of every test namespace (the owner the PVs record).
const nsUID = "6a0c3a1e-0000-4000-8000-000000000001"

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, UID: nsUID}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
}

func storageClass(name string, policy corev1.PersistentVolumeReclaimPolicy, params map[string]string) *storagev1.StorageClass {
	p := map[string]string{
		pvoptions.OptBackstoreServer: "127.0.0.1:7717",
		mutate.OptSecretName:         secretName,
		mutate.OptSecretNamespace:    secretNS,
	}
	for k, v := range params {
		p[k] = v
	}
	return &storagev1.StorageClass{
		ObjectMeta:    metav1.ObjectMeta{Name: name},
		Provisioner:   mutate.Provisioner,
		Parameters:    p,
		ReclaimPolicy: &policy,
	}
}

func claimTemplate(name string, class *string) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func statefulSet(name string, replicas int32, templates ...corev1.PersistentVolumeClaim) *appsv1.StatefulSet {
	if len(templates) == 0 {
		templates = []corev1.PersistentVolumeClaim{claimTemplate("data", ptr.To(testClass))}
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, UID: types.UID("uid-" + name)},
		Spec: appsv1.StatefulSetSpec{
			Replicas:             &replicas,
			Selector:             &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			VolumeClaimTemplates: templates,
		},
	}
}

// planned returns the PV mutate decides for ordinal n of template tpl of sts.
func planned(t *testing.T, sts *appsv1.StatefulSet, sc *storagev1.StorageClass, tpl string, n int) *corev1.PersistentVolume {
	t.Helper()
	cl, ok := mutate.ClassFromStorageClass(sc)
	require.True(t, ok)
	plan, err := mutate.Decide(testCfg, mutate.Input{StatefulSet: sts, NamespaceUID: nsUID, Classes: map[string]mutate.Class{cl.Name: cl}})
	require.NoError(t, err)
	for _, tp := range plan.Templates {
		if tp.Name == tpl {
			pv, err := plan.Ordinal(tp, n).PersistentVolume(testCfg)
			require.NoError(t, err)
			return pv
		}
	}
	t.Fatalf("template %s not planned", tpl)
	return nil
}

// managedPV is a planned PV with server-side fields set.
func managedPV(t *testing.T, sts *appsv1.StatefulSet, sc *storagev1.StorageClass, n int, phase corev1.PersistentVolumePhase, created time.Time) *corev1.PersistentVolume {
	pv := planned(t, sts, sc, "data", n)
	pv.UID = types.UID("uid-" + pv.Name)
	pv.ResourceVersion = "10"
	pv.CreationTimestamp = metav1.NewTime(created)
	pv.Status.Phase = phase
	return pv
}

// fakeDatera records deletions and fails the first len(errs) of them with errs in turn.
type fakeDatera struct {
	mu    sync.Mutex
	calls []string
	errs  []error
	// onDelete runs before each call returns (to check ordering against the API).
	onDelete func(name string)
	// meta is the metadata of each app_instance (absent: ErrNotFound).
	meta map[string]map[string]string
}

func (f *fakeDatera) GetMetadata(_ context.Context, name string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.meta[name]
	if !ok {
		return nil, fmt.Errorf("app_instance %s: %w", name, datera.ErrNotFound)
	}
	return m, nil
}

func (f *fakeDatera) GetAppInstance(_ context.Context, name string) (*datera.AppInstance, error) {
	return nil, fmt.Errorf("app_instance %s: %w", name, datera.ErrNotFound)
}

func (f *fakeDatera) GetACL(_ context.Context, ai, si string) (*datera.ACLPolicy, error) {
	return nil, fmt.Errorf("app_instance %s: %w", ai, datera.ErrNotFound)
}

func (f *fakeDatera) RemoveInitiatorFromACL(_ context.Context, ai, si, iqn string) error {
	return fmt.Errorf("app_instance %s: %w", ai, datera.ErrNotFound)
}

func (f *fakeDatera) DeleteAppInstance(_ context.Context, name string) error {
	f.mu.Lock()
	f.calls = append(f.calls, name)
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	cb := f.onDelete
	f.mu.Unlock()
	if cb != nil {
		cb(name)
	}
	return err
}

func (f *fakeDatera) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// env is a Reconciler over a fake clientset with synced informers; tests drive the sync
// functions directly, or run the whole loop.
type env struct {
	clock  testClock
	t      *testing.T
	client *fake.Clientset
	rec    *testRecorder
	datera *fakeDatera
	r      *Reconciler
	c      *controller
	ctx    context.Context
	cancel context.CancelFunc
}

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testRecorder records events as "<type> <reason> <message> involvedObject{kind=K,name=N}",
// resolving the kind through the scheme as the real recorder does.
type testRecorder struct {
	mu     sync.Mutex
	events []string
}

var _ record.EventRecorder = (*testRecorder)(nil)

func (r *testRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	kind, name := "?", "?"
	if ref, err := reference.GetReference(scheme.Scheme, obj); err == nil {
		kind, name = ref.Kind, ref.Name
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s involvedObject{kind=%s,name=%s}", eventtype, reason, message, kind, name))
}

func (r *testRecorder) Eventf(obj runtime.Object, eventtype, reason, format string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(format, args...))
}

func (r *testRecorder) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventtype, reason, format string, args ...any) {
	r.Eventf(obj, eventtype, reason, format, args...)
}

func (r *testRecorder) drain() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func newEnv(t *testing.T, objs []runtime.Object, mod ...func(*Options)) *env {
	t.Helper()
	client := fake.NewClientset(objs...)
	enforcePreconditions(client)
	e := &env{t: t, client: client, rec: &testRecorder{}, datera: &fakeDatera{}}
	opts := Options{
		Client:      client,
		Mutate:      testCfg,
		OrphanGrace: 5 * time.Minute,
		Recorder:    e.rec,
		DateraFor: func(context.Context, *corev1.PersistentVolume) (DateraAPI, error) {
			return e.datera, nil
		},
		RetryBase: 5 * time.Millisecond,
		RetryMax:  50 * time.Millisecond,
		now:       e.clock.Now,
	}
	e.clock.Set(t0)
	for _, m := range mod {
		m(&opts)
	}
	r, err := New(opts)
	require.NoError(t, err)
	e.r = r
	e.ctx, e.cancel = context.WithCancel(context.Background())
	t.Cleanup(e.cancel)
	return e
}

// start builds the controller and syncs its informers without running workers.
func (e *env) start() *env {
	e.t.Helper()
	c, err := newController(e.r)
	require.NoError(e.t, err)
	for _, f := range c.factories {
		f.Start(e.ctx.Done())
	}
	require.True(e.t, cache.WaitForCacheSync(e.ctx.Done(), c.synced...))
	e.c = c
	e.t.Cleanup(func() {
		e.cancel()
		c.queue.ShutDown()
		for _, f := range c.factories {
			f.Shutdown()
		}
	})
	return e
}

// enforcePreconditions makes the fake apiserver honour delete preconditions, as the real one does.
func enforcePreconditions(client *fake.Clientset) {
	client.PrependReactor("delete", "persistentvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		da := a.(k8stesting.DeleteActionImpl)
		pre := da.DeleteOptions.Preconditions
		if pre == nil {
			return false, nil, nil
		}
		obj, err := client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("persistentvolumes"), "", da.Name)
		if err != nil {
			return false, nil, nil
		}
		cur := obj.(*corev1.PersistentVolume)
		if (pre.UID != nil && *pre.UID != cur.UID) || (pre.ResourceVersion != nil && *pre.ResourceVersion != cur.ResourceVersion) {
			return true, nil, apierrors.NewConflict(corev1.Resource("persistentvolumes"), da.Name,
				errors.New("precondition failed"))
		}
		return false, nil, nil
	})
}

// waitFor polls the informer caches (or anything) until cond holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// events drains the recorded events.
func (e *env) events() []string { return e.rec.drain() }

func eventsWith(evs []string, substr string) []string {
	var out []string
	for _, ev := range evs {
		if strings.Contains(ev, substr) {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) pvNames() []string {
	list, err := e.client.CoreV1().PersistentVolumes().List(context.Background(), metav1.ListOptions{})
	require.NoError(e.t, err)
	var out []string
	for _, pv := range list.Items {
		out = append(out, pv.Name)
	}
	return out
}

func (e *env) pvExists(name string) bool {
	_, err := e.client.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	return err == nil
}

// actions lists the verbs on PVs (create/delete/update) the reconciler made.
func (e *env) pvWrites() []string {
	var out []string
	for _, a := range e.client.Actions() {
		if a.GetResource().Resource != "persistentvolumes" {
			continue
		}
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			name := ""
			switch x := a.(type) {
			case k8stesting.CreateActionImpl:
				name = x.Object.(*corev1.PersistentVolume).Name
			case k8stesting.DeleteActionImpl:
				name = x.Name
			case k8stesting.UpdateActionImpl:
				name = x.Object.(*corev1.PersistentVolume).Name
			}
			out = append(out, a.GetVerb()+" "+name)
		}
	}
	return out
}

func (e *env) errorsMetric(reason string) float64 {
	return testutil.ToFloat64(e.r.metrics.errors.WithLabelValues(reason))
}
