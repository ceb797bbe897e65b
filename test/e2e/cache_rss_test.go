package e2e

import (
	"context"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestCacheRSS measures the resident memory of the built extender and webhook processes
// with their informer caches full, against the same programs on the empty cluster in the
// same run: 500 node report Leases and 5,000 pets (a webhook-shaped PersistentVolume and
// its claim each). It prints the bytes per report and per pet and bounds the extender's
// per-pet cost. BenchmarkCacheRSS (make bench) is the same at 5,000 reports and 50,000
// pets, which takes minutes to load.
func TestCacheRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 10,500 objects into a real apiserver")
	}
	extenderPerPet, webhookPerPet := measureCacheRSS(t, 500, 5000)
	// Resident memory follows the peak of the initial LIST (the full objects are decoded
	// before the transform cuts them down) more than the cache's steady size, so the bound
	// is loose: it catches a cache that keeps full objects twice, not a few hundred bytes.
	assert.Less(t, extenderPerPet, 16384.0, "extender resident bytes per pet")
	assert.Less(t, webhookPerPet, 24576.0, "webhook resident bytes per pet")
}

// BenchmarkCacheRSS is TestCacheRSS at the scale of a 5,000-node cluster: 5,000 reports,
// 50,000 pets. Run once (-benchtime 1x).
func BenchmarkCacheRSS(b *testing.B) {
	for b.Loop() {
		measureCacheRSS(b, 5000, 50000)
	}
}

// measureCacheRSS loads the objects in two steps (reports, then pets) and starts fresh
// extender and webhook processes after each, reading their VmRSS once they are ready
// (caches synced) and have settled. It returns the extender's and the webhook's bytes per
// pet.
func measureCacheRSS(tb testing.TB, reports, pets int) (extenderPerPet, webhookPerPet float64) {
	cluster.RequireBinaries(tb)
	bins := fixtures.Build(tb, fixtures.Program{Name: "extender"}, fixtures.Program{Name: "webhook"})
	c := cluster.Start(tb, cluster.Options{
		Nodes: kwokNodes(1),
		// No binder: the pets are created bound, and its writes would only slow the load.
		ExtraControllerManagerFlags: []string{"--controllers=*,-persistentvolume-binder-controller"},
	})
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 2000, 2000
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	setupDateraNamespaces(ctx, tb, client, map[string]map[string]string{"shop": nil})

	rss := func(step string) (ext, wh uint64) {
		ext = processRSS(tb, c, bins["extender"], "extender-"+step, "--namespace="+credsNamespace)
		wh = processRSS(tb, c, bins["webhook"], "webhook-"+step, "--cluster-id=rss", "--lease-namespace="+credsNamespace, "--identity=webhook-"+step)
		return ext, wh
	}
	ext0, wh0 := rss("empty")

	start := time.Now()
	parallel(ctx, tb, reports, func(i int) error { return createReport(ctx, client, fmt.Sprintf("node-%05d", i)) })
	tb.Logf("created %d report Leases in %s", reports, time.Since(start).Round(time.Second))
	ext1, wh1 := rss("reports")

	start = time.Now()
	parallel(ctx, tb, pets, func(i int) error { return createBoundPet(ctx, client, "shop", fmt.Sprintf("db%d", i/100), i%100) })
	tb.Logf("created %d PVs and %d claims in %s", pets, pets, time.Since(start).Round(time.Second))
	ext2, wh2 := rss("pets")

	// The same PersistentVolume and claim informers in this process, live heap after a
	// full collection, per pet: what the extender stored before (managed fields stripped)
	// and now (extender.SlimObject).
	stripped := informerHeap(ctx, tb, client, informers.WithTransform(cachetransform.StripManagedFields))
	slim := informerHeap(ctx, tb, client, informers.WithTransform(extender.SlimObject))
	tb.Logf("live heap of a PV + claim informer pair in this process, per pet: managed fields stripped %.0f bytes, extender.SlimObject %.0f bytes (%.0f%% less)",
		float64(stripped)/float64(pets), float64(slim)/float64(pets), 100*(1-float64(slim)/float64(stripped)))
	assert.Less(tb, slim, stripped, "the slim transform must save memory")

	mib := func(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	per := func(a, b uint64, n int) float64 { return (float64(b) - float64(a)) / float64(n) }
	extenderPerPet, webhookPerPet = per(ext1, ext2, pets), per(wh1, wh2, pets)
	tb.Logf("resident memory (VmRSS) of each process after its caches synced:")
	tb.Logf("  %-36s %12s %12s", "", "extender", "webhook")
	tb.Logf("  %-36s %12s %12s", "empty cluster", mib(ext0), mib(wh0))
	tb.Logf("  %-36s %12s %12s", fmt.Sprintf("+ %d node reports", reports), mib(ext1), mib(wh1))
	tb.Logf("  %-36s %12s %12s", fmt.Sprintf("+ %d pets (PV + claim)", pets), mib(ext2), mib(wh2))
	tb.Logf("  %-36s %12.0f %12.0f", "bytes per node report", per(ext0, ext1, reports), per(wh0, wh1, reports))
	tb.Logf("  %-36s %12.0f %12.0f", "bytes per pet (PV + claim)", extenderPerPet, webhookPerPet)
	if b, ok := tb.(*testing.B); ok {
		// make bench's table: full caches against the empty cluster of the same run.
		rssMiB := func(v uint64) float64 { return float64(v) / (1 << 20) }
		b.ReportMetric(rssMiB(ext2), "extender-rss-MiB")
		b.ReportMetric(rssMiB(ext0), "extender-empty-rss-MiB")
		b.ReportMetric(rssMiB(wh2), "webhook-rss-MiB")
		b.ReportMetric(rssMiB(wh0), "webhook-empty-rss-MiB")
		b.ReportMetric(extenderPerPet, "extender-B/pet")
		b.ReportMetric(webhookPerPet, "webhook-B/pet")
	}
	return extenderPerPet, webhookPerPet
}

// informerHeap is the live heap that synced PersistentVolume and claim informers hold (the
// smallest of three tries: other goroutines' garbage only adds).
func informerHeap(ctx context.Context, tb testing.TB, client kubernetes.Interface, opts ...informers.SharedInformerOption) uint64 {
	var best uint64
	for range 3 {
		before := liveHeap()
		f := informers.NewSharedInformerFactoryWithOptions(client, 0, opts...)
		f.Core().V1().PersistentVolumes().Informer()
		f.Core().V1().PersistentVolumeClaims().Informer()
		stop := make(chan struct{})
		f.Start(stop)
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			require.True(tb, ok, "%v did not sync", typ)
		}
		after := liveHeap()
		runtime.KeepAlive(f)
		close(stop)
		f.Shutdown()
		if d := after - before; best == 0 || d < best {
			best = d
		}
	}
	return best
}

// processRSS starts a built program against the cluster, waits until /readyz answers 200
// (its informer caches synced), lets it settle, reads its VmRSS and stops it.
func processRSS(tb testing.TB, c *cluster.Cluster, bin, name string, flags ...string) uint64 {
	tb.Helper()
	ca, err := testpki.NewCA(name + "-ca")
	require.NoError(tb, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(tb, err)
	dir := tb.TempDir()
	certFile, keyFile, err := pair.WriteFiles(dir, "tls")
	require.NoError(tb, err)
	caFile := filepath.Join(dir, "ca.crt")
	require.NoError(tb, os.WriteFile(caFile, ca.CertPEM, 0o600))
	port, health := fixtures.FreePort(tb), fixtures.FreePort(tb)
	args := append([]string{"--kubeconfig=" + c.Kubeconfig,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", health),
		"--tls-cert-file=" + certFile, "--tls-key-file=" + keyFile}, flags...)
	if filepath.Base(bin) == "extender" {
		args = append(args, "--client-ca-file="+caFile)
	}
	logFile, err := os.Create(filepath.Join(c.Dir, name+".log"))
	require.NoError(tb, err)
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(tb, cmd.Start())
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	require.Eventually(tb, func() bool {
		return httpStatus(fmt.Sprintf("http://127.0.0.1:%d/readyz", health)) == http.StatusOK
	}, 10*time.Minute, 200*time.Millisecond, "%s never ready (log %s)", name, logFile.Name())
	time.Sleep(5 * time.Second)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(tb, err)
			return kb << 10
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", cmd.Process.Pid)
	return 0
}

// parallel runs fn(0..n-1) on 32 workers and requires every call to succeed.
func parallel(ctx context.Context, tb testing.TB, n int, fn func(i int) error) {
	tb.Helper()
	jobs := make(chan int)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range jobs {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	require.NoError(tb, first)
	require.NoError(tb, ctx.Err())
}

// createReport writes a node's report Lease as its agent would: two backstores of two
// portals, one attached volume.
func createReport(ctx context.Context, cs kubernetes.Interface, node string) error {
	r := &placement.Report{Version: placement.ReportVersion, Initiator: "iqn.2024-01.io.petfabric:" + node, ProbedAt: time.Now(),
		Attached: []string{"e2e_shop_data-" + node},
		Backstores: map[string]placement.BackstoreReport{
			"172.16.0.10:7717": {Portals: map[string]placement.PortalReport{"10.1.1.5:3260": {OK: true, RTTMicros: 180}, "10.1.1.6:3260": {OK: true, RTTMicros: 210}}},
			"172.16.0.20:7717": {Portals: map[string]placement.PortalReport{"10.2.1.5:3260": {OK: true, RTTMicros: 250}, "10.2.1.6:3260": {Error: "connection refused"}}},
		}}
	enc, err := r.Encode()
	if err != nil {
		return err
	}
	_, err = cs.CoordinationV1().Leases(credsNamespace).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Namespace: credsNamespace,
			Labels:      map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue, placement.LeaseComponentLabel: placement.LeaseComponentValue},
			Annotations: map[string]string{placement.ReportAnnotation: enc}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create report Lease of %s: %w", node, err)
	}
	return nil
}

// createBoundPet creates a PV as the webhook makes it, pre-bound to its claim, and the
// claim naming it (two writes; the statuses stay empty, which the caches do not mind).
func createBoundPet(ctx context.Context, cs kubernetes.Interface, ns, set string, n int) error {
	claim := fmt.Sprintf("data-%s-%d", set, n)
	pvName := "datera-" + ns + "." + claim
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName,
			Labels: map[string]string{mutate.LabelManagedBy: mutate.ManagedByValue, mutate.LabelNamespace: ns,
				placement.LabelStatefulSet: set, placement.LabelOrdinal: strconv.Itoa(n)},
			Annotations: map[string]string{mutate.AnnStatefulSet: set}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "datera-gold",
			ClaimRef:                      &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: "datera/iscsi", FSType: "xfs",
				SecretRef: &corev1.SecretReference{Namespace: credsNamespace, Name: credsSecret},
				Options: map[string]string{
					"volumeID": "e2e_" + ns + "_" + claim, "backstoreServer": "172.16.0.10:7717", "size": "1", "replica": "3",
					"fsType": "xfs", "accessMode": "ReadWriteOnce", "ownerCluster": "e2e", "ownerNamespace": ns,
					"ownerClaim": claim, "ownerNamespaceUID": "3f0c3a2e-8d4b-4d0e-9a55-0f4c1c3b2a10", "template": "data",
				},
			}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create PV %s: %w", pvName, err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns, Labels: map[string]string{"app": set},
			Annotations: map[string]string{"petfabric.io/replica": "3", "petfabric.io/fsType": "xfs"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("datera-gold"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			VolumeName:       pvName,
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create claim %s: %w", claim, err)
	}
	return nil
}
