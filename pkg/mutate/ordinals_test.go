package mutate

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
)

// TestOrdinalRangeOf is the one reading of a StatefulSet's ordinals that the webhook and the
// reconcile loop share: spec.ordinals.start, replicas nil (the API default 1), 0 and negative
// (none), the int32 extremes, and the part below the ordinal ceiling that gets volumes.
func TestOrdinalRangeOf(t *testing.T) {
	const ceiling = 1000
	cases := []struct {
		name     string
		replicas *int32
		start    *int32 // nil: no spec.ordinals
		want     OrdinalRange
		wantLen  int64
		below    OrdinalRange
	}{
		{name: "replicas nil is one ordinal", want: OrdinalRange{0, 1}, wantLen: 1, below: OrdinalRange{0, 1}},
		{name: "replicas 0 is none", replicas: ptr.To[int32](0), want: OrdinalRange{0, 0}, wantLen: 0, below: OrdinalRange{0, 0}},
		{name: "negative replicas is none", replicas: ptr.To[int32](-3), want: OrdinalRange{0, 0}, wantLen: 0, below: OrdinalRange{0, 0}},
		{name: "three replicas", replicas: ptr.To[int32](3), want: OrdinalRange{0, 3}, wantLen: 3, below: OrdinalRange{0, 3}},
		{name: "ordinals.start shifts the range", replicas: ptr.To[int32](2), start: ptr.To[int32](5), want: OrdinalRange{5, 7}, wantLen: 2, below: OrdinalRange{5, 7}},
		{name: "ordinals.start with replicas nil", start: ptr.To[int32](7), want: OrdinalRange{7, 8}, wantLen: 1, below: OrdinalRange{7, 8}},
		{name: "ordinals.start 0 set explicitly", replicas: ptr.To[int32](2), start: ptr.To[int32](0), want: OrdinalRange{0, 2}, wantLen: 2, below: OrdinalRange{0, 2}},
		{name: "reaching the ceiling is cut at it", replicas: ptr.To[int32](10), start: ptr.To[int32](995), want: OrdinalRange{995, 1005}, wantLen: 10, below: OrdinalRange{995, 1000}},
		{name: "exactly up to the ceiling is whole", replicas: ptr.To[int32](ceiling), want: OrdinalRange{0, ceiling}, wantLen: ceiling, below: OrdinalRange{0, ceiling}},
		{name: "starting above the ceiling gets none", replicas: ptr.To[int32](2), start: ptr.To[int32](2000), want: OrdinalRange{2000, 2002}, wantLen: 2, below: OrdinalRange{ceiling, ceiling}},
		{name: "int32 extremes do not overflow", replicas: ptr.To[int32](math.MaxInt32), start: ptr.To[int32](math.MaxInt32),
			want: OrdinalRange{math.MaxInt32, 2 * math.MaxInt32}, wantLen: math.MaxInt32, below: OrdinalRange{ceiling, ceiling}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: tc.replicas}}
			if tc.start != nil {
				sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: *tc.start}
			}
			got := OrdinalRangeOf(sts)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantLen, got.Len())
			assert.Equal(t, tc.below, got.Below(ceiling))
			assert.LessOrEqual(t, got.Below(ceiling).End, int64(ceiling), "nothing at or above the ceiling")
			if tc.wantLen > 0 {
				assert.True(t, got.Contains(tc.want.Start))
				assert.True(t, got.Contains(tc.want.End-1))
			}
			assert.False(t, got.Contains(tc.want.Start-1))
			assert.False(t, got.Contains(tc.want.End))
		})
	}
}

// TestOrdinalRangeMinus: the ordinals a scale adds, as the webhook computes them.
func TestOrdinalRangeMinus(t *testing.T) {
	cases := []struct {
		name     string
		now, old OrdinalRange
		want     []OrdinalRange
	}{
		{name: "scale up adds the top", now: OrdinalRange{0, 5}, old: OrdinalRange{0, 3}, want: []OrdinalRange{{3, 5}}},
		{name: "scale down adds none", now: OrdinalRange{0, 2}, old: OrdinalRange{0, 3}, want: nil},
		{name: "start moved down adds the bottom", now: OrdinalRange{0, 5}, old: OrdinalRange{2, 5}, want: []OrdinalRange{{0, 2}}},
		{name: "both ends grow", now: OrdinalRange{0, 10}, old: OrdinalRange{3, 5}, want: []OrdinalRange{{0, 3}, {5, 10}}},
		{name: "disjoint is all new", now: OrdinalRange{10, 12}, old: OrdinalRange{0, 3}, want: []OrdinalRange{{10, 12}}},
		{name: "old empty is all new", now: OrdinalRange{0, 2}, old: OrdinalRange{0, 0}, want: []OrdinalRange{{0, 2}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.now.Minus(tc.old))
		})
	}
}
