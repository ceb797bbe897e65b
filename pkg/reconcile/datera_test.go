package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// simulator serves pkg/datera/fake over HTTP on port 7717 (Datera's http port: a
// backstoreServer must name 7717 or 7718) of a random loopback address, so tests running in
// parallel do not collide, and returns it with its backstoreServer host:port.
func simulator(t *testing.T) (*fake.Server, string) {
	t.Helper()
	sim, err := fake.New(fake.Options{})
	require.NoError(t, err)
	return sim, fake.ServeBackstore(t, sim)
}

func credentials(user, pass string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: secretNS, Name: secretName},
		Type:       "datera/iscsi",
		Data:       map[string][]byte{"username": []byte(user), "password": []byte(pass)},
	}
}

// The default DateraFor: backstoreServer and tenant from the PV's options, credentials from
// its secretRef, a real pkg/datera client against the simulator.
func TestDefaultDateraFor(t *testing.T) {
	tests := []struct {
		name     string
		secret   *corev1.Secret
		wantGone bool
		wantWarn string
	}{
		{name: "credentials from the secretRef: volume and PV deleted", secret: credentials(fake.DefaultUser, fake.DefaultPassword), wantGone: true},
		{name: "no secret: PV kept, warning", wantWarn: `cannot reach Datera to delete volume`},
		{name: "secret without password: PV kept", secret: credentials(fake.DefaultUser, ""), wantWarn: "lacks the username or password key"},
		{name: "wrong password: PV kept", secret: credentials(fake.DefaultUser, "wrong-password"), wantWarn: "reading the owner of Datera volume"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, backstore := simulator(t)
			del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, map[string]string{pvoptions.OptBackstoreServer: backstore})
			pv := releasedPV(t, del, 1, corev1.VolumeReleased)
			volumeID := pv.Spec.FlexVolume.Options["volumeID"]
			admin, err := datera.New(datera.Config{Endpoint: "http://" + backstore, Username: fake.DefaultUser, Password: fake.DefaultPassword})
			require.NoError(t, err)
			_, err = admin.CreateAppInstance(context.Background(), datera.CreateVolumeRequest{Name: volumeID, SizeGiB: 1})
			require.NoError(t, err)

			objs := []runtime.Object{namespace(testNS, nil), del, pv}
			if tc.secret != nil {
				objs = append(objs, tc.secret)
			}
			e := newEnv(t, objs, func(o *Options) {
				o.DateraFor = nil // the default, with the default endpoint mapping (7717: http)
			}).start()
			e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
			_, err = e.c.syncPV(context.Background(), pv.Name)
			_, getErr := admin.GetAppInstance(context.Background(), volumeID)
			if tc.wantGone {
				require.NoError(t, err)
				assert.ErrorIs(t, getErr, datera.ErrNotFound, "the Datera volume is gone")
				assert.False(t, e.pvExists(pv.Name))
				return
			}
			require.Error(t, err, "an error makes the workqueue retry")
			assert.NoError(t, getErr, "the Datera volume is still there")
			assert.True(t, e.pvExists(pv.Name), "the PV keeps track of it")
			assert.Len(t, eventsWith(e.events(), tc.wantWarn), 1)
		})
	}
}

// The default endpoint mapping refuses a port it cannot infer the scheme of (a PV written by
// hand: mutate never produces one).
func TestDefaultEndpointRefusesUnknownPort(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	pv := releasedPV(t, del, 1, corev1.VolumeReleased)
	pv.Spec.FlexVolume.Options[pvoptions.OptBackstoreServer] = "127.0.0.1:1234"
	e := newEnv(t, []runtime.Object{namespace(testNS, nil), pv, credentials("admin", "password")}, func(o *Options) { o.DateraFor = nil }).start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
	_, err := e.c.syncPV(context.Background(), pv.Name)
	require.ErrorContains(t, err, "cannot infer http or https")
	assert.True(t, e.pvExists(pv.Name))
	assert.Equal(t, 1.0, e.errorsMetric(ReasonDateraClient))
}

// An Available orphan with reclaim policy Delete loses only its PV: a Datera volume with its
// volumeID predates it (it was never bound, so never mounted) and is kept.
func TestAvailableOrphanKeepsDateraVolume(t *testing.T) {
	_, backstore := simulator(t)
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, map[string]string{pvoptions.OptBackstoreServer: backstore})
	pv := managedPV(t, statefulSet("web", 3), del, 1, corev1.VolumeAvailable, t0.Add(-time.Hour))
	volumeID := pv.Spec.FlexVolume.Options["volumeID"]
	admin, err := datera.New(datera.Config{Endpoint: "http://" + backstore, Username: fake.DefaultUser, Password: fake.DefaultPassword})
	require.NoError(t, err)
	_, err = admin.CreateAppInstance(context.Background(), datera.CreateVolumeRequest{Name: volumeID, SizeGiB: 1})
	require.NoError(t, err)

	e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, pv, credentials(fake.DefaultUser, fake.DefaultPassword)},
		func(o *Options) { o.DateraFor = nil }).start()
	e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
	_, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	e.clock.Add(5 * time.Minute)
	_, err = e.c.syncPV(context.Background(), pv.Name)
	require.NoError(t, err)
	assert.False(t, e.pvExists(pv.Name), "the orphan PV is deleted (its StatefulSet is gone)")
	_, err = admin.GetAppInstance(context.Background(), volumeID)
	assert.NoError(t, err, "its Datera volume is kept")
}
