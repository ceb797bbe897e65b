package mutate

import (
	"testing"
)

// BenchmarkDecidePatchPVs: the pure work of one StatefulSet CREATE with three Datera claim
// templates × 3 replicas (mixed.yaml has three Datera templates in a namespace not opted in):
// decide, patch, and the nine PVs.
func BenchmarkDecidePatchPVs(b *testing.B) {
	classes := loadClasses(b)
	_, raw := loadSTS(b, "mixed.yaml")
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sts := stsFromJSON(b, raw)
			if _, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes}); err != nil {
				b.Fatal(err)
			}
		}
	})
	sts := stsFromJSON(b, raw)
	plan, err := Decide(testCfg, Input{NamespaceUID: testNSUID, StatefulSet: sts, Classes: classes})
	if err != nil || len(plan.Templates) != 3 {
		b.Fatal(err, len(plan.Templates))
	}
	b.Run("patch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, err := plan.Patch(raw, sts); err != nil || p == nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pvs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, tp := range plan.Templates {
				for n := range 3 {
					if _, err := plan.Ordinal(tp, n).PersistentVolume(testCfg); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
}
