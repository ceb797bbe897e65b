package flex

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// credentials are the Datera login and the optional session CHAP of one call.
type credentials struct {
	Username, Password string
	CHAP               *iscsi.SessionCHAP
	Source             string
}

// LogValue keeps secrets out of logs.
func (c credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username), slog.String("source", c.Source), slog.Bool("chap", c.CHAP != nil))
}

// mountCredentials picks the credentials: the PV's secretRef (kubelet passes its values as
// kubernetes.io/secret/<key>), else the node's credentials file. CHAP comes from the secret, else
// the credentials file, else the node config.
func (d *Driver) mountCredentials(req *MountRequest) (*credentials, error) {
	s := req.Secrets
	var c credentials
	var file *FileCredentials
	loadFile := func() error {
		if file != nil || d.Config.CredentialsFile == "" {
			return nil
		}
		var err error
		file, err = loadCredentialsFile(d.Config.CredentialsFile)
		return err
	}
	switch {
	case s[SecretUsername] != "" || s[SecretPassword] != "":
		if s[SecretUsername] == "" || s[SecretPassword] == "" {
			return nil, errors.New("the volume's secret has only one of the keys username and password")
		}
		c = credentials{Username: s[SecretUsername], Password: s[SecretPassword], Source: "secret"}
	case d.Config.CredentialsFile != "":
		if err := credentialsFileServes(req); err != nil {
			return nil, err
		}
		if err := loadFile(); err != nil {
			return nil, err
		}
		if file.Username == "" || file.Password == "" {
			return nil, fmt.Errorf("credentials file %s lacks username or password", d.Config.CredentialsFile)
		}
		c = credentials{Username: file.Username, Password: file.Password, Source: "credentialsFile"}
	default:
		return nil, errors.New("no Datera credentials: the PersistentVolume's secretRef passed no username/password " +
			"(a Secret of type datera/iscsi with keys username and password), and the node config names no credentialsFile")
	}
	switch {
	case s[SecretCHAPUser] != "" || s[SecretCHAPPassword] != "":
		c.CHAP = &iscsi.SessionCHAP{Username: s[SecretCHAPUser], Password: s[SecretCHAPPassword],
			UsernameIn: s[SecretCHAPUserIn], PasswordIn: s[SecretCHAPPasswordIn]}
	default:
		if err := loadFile(); err != nil {
			return nil, err
		}
		if file != nil && file.CHAP != nil {
			c.CHAP = file.CHAP.session()
		} else {
			c.CHAP = d.Config.CHAP.session()
		}
	}
	if c.CHAP != nil {
		if err := c.CHAP.Validate(); err != nil {
			return nil, fmt.Errorf("session CHAP from the secret or node config: %w", err)
		}
	}
	return &c, nil
}

// credentialsFileServes decides whether the node's credentials file may log in for this
// volume. The file holds whatever login the admin gave the node, so only volumes petfabric made
// may use it: a PersistentVolume whose name (kubelet's pvOrVolumeName) is the PV name of the
// claim its own options name. An inline flexVolume is named by the pod with a DNS label, which
// never contains the '.' that every petfabric PV name has, so no pod can dress its own volume up
// as one; a hand-made PV with such a name is what the admission policy keeps out.
func credentialsFileServes(req *MountRequest) error {
	const tail = "; give the volume a secretRef of type datera/iscsi with keys username and password"
	switch {
	case !req.HasOwner:
		return fmt.Errorf("the node's credentials file serves only petfabric PersistentVolumes, and volume %q is not one "+
			"(it has no %s/%s options)%s", clip(req.PVName), pvoptions.OptClaimNamespace, pvoptions.OptClaimName, tail)
	case !pvoptions.IsPVNameOf(req.PVName, req.Owner.Namespace, req.Owner.Claim):
		return fmt.Errorf("the node's credentials file serves only petfabric PersistentVolumes, and volume %q is not one "+
			"(petfabric names the PV of claim %s/%s %q)%s", clip(req.PVName), req.Owner.Namespace, req.Owner.Claim,
			pvoptions.PVName(req.Owner.Namespace, req.Owner.Claim), tail)
	}
	return nil
}

// unmountCredentials are the ones the mount stored, else the node's credentials file.
func (d *Driver) unmountCredentials(id string) (*credentials, error) {
	sc, err := d.State.LoadCredentials(id)
	if err != nil {
		return nil, err
	}
	if sc != nil {
		return &credentials{Username: sc.Username, Password: sc.Password, Source: "stored"}, nil
	}
	if d.Config.CredentialsFile != "" {
		f, err := loadCredentialsFile(d.Config.CredentialsFile)
		if err != nil {
			return nil, err
		}
		return &credentials{Username: f.Username, Password: f.Password, Source: "credentialsFile"}, nil
	}
	return nil, fmt.Errorf("no Datera credentials to remove this node from the ACL of %s: none stored by mount and no credentialsFile in the node config", id)
}
