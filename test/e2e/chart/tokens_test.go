package chart

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/test/cluster"
)

// identity is a ServiceAccount token as a pod of that account would hold it: a token from
// TokenRequest (bound to a pod when the program needs its node name), a kubeconfig file
// carrying it for the program's --kubeconfig, and a client acting with it.
type identity struct {
	user       string
	kubeconfig string
	client     kubernetes.Interface
}

// serviceAccountIdentity requests a token of ServiceAccount ns/sa (bound to bound when not nil)
// and writes a kubeconfig with it into dir.
func serviceAccountIdentity(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, sa string, bound *authenticationv1.BoundObjectReference) identity {
	t.Helper()
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600), BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "TokenRequest for %s/%s", ns, sa)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.CAPEM}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	client, err := kubernetes.NewForConfig(&rest.Config{
		Host: c.Config.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAPEM},
	})
	require.NoError(t, err)
	return identity{user: "system:serviceaccount:" + ns + ":" + sa, kubeconfig: path, client: client}
}
