package chart

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/test/helmchart"
)

// TestSchemaRejectsBadValues: values.schema.json stops a bad value of each class (wrong type,
// unknown key, value outside its set, malformed string, missing required key) with an error
// that names the value, before anything renders.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		class, name, values string
		want                []string
	}{
		{"type", "replicas is a string", "webhook:\n  replicas: two\n", []string{"webhook", "replicas"}},
		{"type", "timeoutSeconds is a float", "webhook:\n  timeoutSeconds: 2.5\n", []string{"webhook", "timeoutSeconds"}},
		{"type", "reconcile is not a boolean", "webhook:\n  reconcile: 'yes'\n", []string{"webhook", "reconcile"}},
		{"unknown key", "misspelt failurePolicy", "webhook:\n  failurPolicy: Fail\n", []string{"failurPolicy"}},
		{"unknown key", "unknown top-level key", "scheduler2: {}\n", []string{"scheduler2"}},
		{"unknown key", "unknown issuerRef key", "tls:\n  issuerRef: {name: x, namespace: y}\n", []string{"issuerRef", "namespace"}},
		{"enum", "failurePolicy", "webhook:\n  failurePolicy: Retry\n", []string{"webhook", "failurePolicy"}},
		{"enum", "reinvocationPolicy", "webhook:\n  reinvocationPolicy: Always\n", []string{"webhook", "reinvocationPolicy"}},
		{"enum", "logLevel", "logLevel: verbose\n", []string{"logLevel"}},
		{"enum", "issuer kind", "tls:\n  issuerRef: {name: x, kind: Vault}\n", []string{"issuerRef", "kind"}},
		{"enum", "volumeBindingMode", "storageClasses:\n  - {name: a, backstoreServer: 'b:7718', fsType: xfs, replica: 3, reclaimPolicy: Retain, volumeBindingMode: Later}\n", []string{"storageClasses", "volumeBindingMode"}},
		{"range", "timeoutSeconds above 30", "webhook:\n  timeoutSeconds: 31\n", []string{"webhook", "timeoutSeconds"}},
		{"range", "replica above Datera's 5", "storageClasses:\n  - {name: a, backstoreServer: 'b:7718', fsType: xfs, replica: 6, reclaimPolicy: Retain, volumeBindingMode: Immediate}\n", []string{"storageClasses", "replica"}},
		{"pattern", "url with a path", "webhook:\n  url: https://h:8443/mutate\n", []string{"webhook", "url"}},
		{"pattern", "plain http url", "webhook:\n  url: http://h:8443\n", []string{"webhook", "url"}},
		{"pattern", "duration", "tls:\n  duration: 90days\n", []string{"tls", "duration"}},
		{"pattern", "class name", "storageClasses:\n  - {name: Gold, backstoreServer: 'b:7718', fsType: xfs, replica: 3, reclaimPolicy: Retain, volumeBindingMode: Immediate}\n", []string{"storageClasses", "name"}},
		{"pattern", "backstoreServer port", "storageClasses:\n  - {name: a, backstoreServer: 'd.example.com:443', fsType: xfs, replica: 3, reclaimPolicy: Retain, volumeBindingMode: Immediate}\n", []string{"storageClasses", "backstoreServer"}},
		{"pattern", "clusterID", "clusterID: 'a b'\n", []string{"clusterID"}},
		{"pattern", "caBundle not PEM", "tls:\n  caBundle: abc\n", []string{"tls", "caBundle"}},
		{"pattern", "opt-out label", "webhook:\n  optOutLabel: 'a b'\n", []string{"webhook", "optOutLabel"}},
		{"reserved", "class parameter the chart sets", "storageClasses:\n  - {name: a, backstoreServer: 'b:7718', fsType: xfs, replica: 3, reclaimPolicy: Retain, volumeBindingMode: Immediate, parameters: {secretName: x}}\n", []string{"storageClasses", "parameters"}},
		{"required", "class without backstoreServer", "storageClasses:\n  - {name: a, fsType: xfs, replica: 3, reclaimPolicy: Retain, volumeBindingMode: Immediate}\n", []string{"storageClasses", "backstoreServer"}},
		{"required", "webhook block removed", "webhook: null\n", []string{"webhook"}},
	} {
		t.Run(tc.class+"/"+tc.name, func(t *testing.T) {
			out, err := helmchart.Template(t, tc.values)
			require.Error(t, err, "rendered:\n%s", out)
			require.Contains(t, err.Error(), "values don't meet the specifications of the schema")
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
