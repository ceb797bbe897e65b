package placement

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodVolumesReadsEveryContractVersion: the extender places a pod whose claim is bound to
// a PV written by the webhook now (the golden file pkg/mutate pins) or by a version 1 webhook
// (pkg/pvoptions' fixture): both carry the volumeID and backstoreServer it reads.
func TestPodVolumesReadsEveryContractVersion(t *testing.T) {
	for _, tc := range []struct {
		name, file, volumeID, backstore string
	}{
		{"version 2 (golden)", "../mutate/testdata/pv-options.golden.json", "pf_default_pv-claim-test-petset-1", "datera.example.com:7718"},
		{"version 1", "../pvoptions/testdata/pv-options-v1.json", "default_pv-claim-test-petset-1", "tlx170.tlx.daterainc.com:7717"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			require.NoError(t, err)
			var opts map[string]string
			require.NoError(t, json.Unmarshal(b, &opts))
			pv := &corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: "pv"},
				Spec: corev1.PersistentVolumeSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					ClaimRef:    &corev1.ObjectReference{Namespace: "default", Name: "pv-claim-test-petset-1"},
					PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
						Driver: FlexDriver, Options: opts,
					}},
				},
			}
			claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pv-claim-test-petset-1"},
				Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv"}}
			lk := mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{"default/pv-claim-test-petset-1": claim},
				pvs: map[string]*corev1.PersistentVolume{"pv": pv}}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "test-petset-1"},
				Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pv-claim-test-petset-1"}}}}}}
			vols, err := PodVolumes(pod, lk)
			require.NoError(t, err)
			require.Len(t, vols, 1)
			assert.Equal(t, tc.volumeID, vols[0].VolumeID)
			assert.Equal(t, tc.backstore, vols[0].Backstore)
			assert.True(t, vols[0].RWO)
		})
	}
}
