package iscsi_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
)

// BenchmarkProbe measures a whole discovery probe (connect, login, SendTargets, logout)
// against a real local tgtd, next to a bare TCP connect to the same portal as baseline.
func BenchmarkProbe(b *testing.B) {
	tgt := probetest.Start(b)
	tgt.AddTarget(probetest.TargetOptions{IQN: volA, Initiators: []string{nodeA}})
	tgt.AddTarget(probetest.TargetOptions{IQN: volOpen})
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("discovery", func(b *testing.B) {
		var lat []time.Duration
		var rtt time.Duration
		for b.Loop() {
			t0 := time.Now()
			res, err := iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{InitiatorName: nodeA})
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			rtt += res.RTT
		}
		report(b, lat)
		b.ReportMetric(float64(rtt.Microseconds())/float64(len(lat)), "rtt-µs")
	})
	b.Run("discovery-chap", func(b *testing.B) {
		tgt.SetDiscoveryCHAP("bench-user", "bench-secret-1234", false)
		var lat []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{InitiatorName: nodeA,
				CHAP: &iscsi.DiscoveryCHAP{Username: "bench-user", Secret: "bench-secret-1234"}}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat)
	})
	b.Run("tcp-connect-baseline", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			t0 := time.Now()
			c, err := net.Dial("tcp", tgt.Portal)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			_ = c.Close()
		}
		report(b, lat)
	})
}
