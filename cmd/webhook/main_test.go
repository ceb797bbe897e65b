package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

// An empty --cluster-id used to reach the PVs as an empty prefix: two clusters sharing a
// backstore mapped their claims to the same app_instance. Now it is derived from the
// kube-system namespace UID, and a webhook that cannot read it does not start.
func TestEmptyClusterIDDerivedFromKubeSystemUID(t *testing.T) {
	ks := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", UID: types.UID("0f3a9c2e-7b1d-4e5f-8a6b-1c2d3e4f5a6b")}}
	id, err := resolveClusterID(context.Background(), fake.NewClientset(ks), "")
	require.NoError(t, err)
	assert.Equal(t, "k0f3a9c2e7b1d4e5f", id)

	other := ks.DeepCopy()
	other.UID = "9e8d7c6b-0000-4000-8000-000000000000"
	id2, err := resolveClusterID(context.Background(), fake.NewClientset(other), "")
	require.NoError(t, err)
	assert.NotEqual(t, id, id2, "two clusters, two cluster IDs")

	_, err = resolveClusterID(context.Background(), fake.NewClientset(), "")
	assert.ErrorContains(t, err, "get on namespaces/kube-system")

	id, err = resolveClusterID(context.Background(), fake.NewClientset(), "prod_a")
	require.NoError(t, err)
	assert.Equal(t, "prod_a", id)
	_, err = resolveClusterID(context.Background(), fake.NewClientset(), "has space")
	assert.ErrorContains(t, err, "--cluster-id")
}

func TestCheckFlags(t *testing.T) {
	cases := []struct {
		name             string
		maxOrd           int
		qps, loopQPS     float64
		burst, loopBurst int
		want             string
	}{
		{name: "defaults", maxOrd: 1000, qps: DefaultKubeAPIQPS, burst: DefaultKubeAPIBurst, loopQPS: 20, loopBurst: 40},
		{name: "no ordinals", maxOrd: 0, qps: 1, burst: 1, loopQPS: 1, loopBurst: 1, want: "--max-ordinals 0"},
		{name: "zero qps", maxOrd: 1, qps: 0, burst: 1, loopQPS: 1, loopBurst: 1, want: "--kube-api-qps 0"},
		{name: "zero burst", maxOrd: 1, qps: 1, burst: 0, loopQPS: 1, loopBurst: 1, want: "--kube-api-burst 0"},
		{name: "negative loop qps", maxOrd: 1, qps: 1, burst: 1, loopQPS: -1, loopBurst: 1, want: "--reconcile-kube-api-qps -1"},
		{name: "zero loop burst", maxOrd: 1, qps: 1, burst: 1, loopQPS: 1, loopBurst: 0, want: "--reconcile-kube-api-burst 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFlags(tc.maxOrd, tc.qps, tc.burst, tc.loopQPS, tc.loopBurst)
			if tc.want == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.want)
			}
		})
	}
	assert.ErrorContains(t, run([]string{"--max-ordinals", "-3"}), "--max-ordinals -3")
}

// The admission path and the reconcile loop never share a rate limiter: the loop (and its
// leader election) builds clients of its own from a separate configuration.
func TestAdmissionAndLoopClientsAreSeparate(t *testing.T) {
	base := &rest.Config{Host: "https://127.0.0.1:6443", QPS: 5, Burst: 10}
	adm, loop := clientConfigs(base, 50, 100)
	assert.NotSame(t, adm, loop)
	assert.Equal(t, float32(50), adm.QPS)
	assert.Equal(t, 100, adm.Burst)
	assert.Equal(t, "petfabric-webhook", adm.UserAgent)
	assert.Equal(t, "petfabric-webhook-reconcile", loop.UserAgent)
	assert.Nil(t, loop.RateLimiter)
	assert.Equal(t, float32(5), base.QPS, "the loaded configuration is not modified")
}
