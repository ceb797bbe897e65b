package fake

import (
	"crypto/subtle"
	"net/http"
	"slices"
	"sort"
	"strings"
)

type loginBody struct {
	Name         *string `json:"name"`
	Password     *string `json:"password"`
	RemoteServer *string `json:"remote_server"`
}

// login: PUT /login, JSON or form body (GOSDK sends a form), answer without envelope.
func (s *Server) login(c *call) result {
	var b loginBody
	if isForm(c.r) {
		vals, err := readForm(c.r, "name", "password", "remote_server")
		if err != nil {
			return fail(err)
		}
		for key, dst := range map[string]**string{"name": &b.Name, "password": &b.Password, "remote_server": &b.RemoteServer} {
			if vals.Has(key) {
				v := vals.Get(key)
				*dst = &v
			}
		}
	} else if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	v.required("name", b.Name != nil)
	v.required("password", b.Password != nil)
	if b.Name != nil {
		v.pattern("name", *b.Name, reLoginName)
	}
	if b.Password != nil && !rePassword.MatchString(*b.Password) {
		v = append(v, "password: does not match the password pattern") // never echo it
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	want, known := s.opts.Users[*b.Name]
	if !known || subtle.ConstantTimeCompare([]byte(want), []byte(*b.Password)) != 1 {
		return fail(authFailed("Authentication failed: invalid user name or password"))
	}
	key := randomHex(16)
	s.sessions[key] = session{user: *b.Name, expires: s.now().Add(s.opts.TokenTTL)}
	return result{status: http.StatusOK, raw: map[string]any{"key": key, "version": c.version, "request_time": s.now().Unix()}}
}

func (s *Server) logout(c *call) result {
	delete(s.sessions, c.r.Header.Get("Auth-Token"))
	return ok("/logout", map[string]any{})
}

func (s *Server) system(c *call) result {
	var provisioned int64
	for _, t := range s.tenants {
		for _, ai := range t.appInstances {
			for _, si := range ai.storage {
				for _, v := range si.volumes {
					provisioned += v.size << 30
				}
			}
		}
	}
	const total = int64(100) << 40
	return ok("/system", map[string]any{
		"path": "/system", "name": "datera-sim", "uuid": "00000000-0000-4000-8000-0000000000d5",
		"sw_version": "3.3.5.0", "build_version": "sim", "health": "ok", "op_state": "running",
		"total_capacity": total, "available_capacity": total - provisioned, "total_provisioned_capacity": provisioned,
	})
}

func (s *Server) listTenants(c *call) result {
	paths := make([]string, 0, len(s.tenants))
	for p := range s.tenants {
		if p == c.tenantPath || strings.HasPrefix(p, c.tenantPath+"/") {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	items := make([]any, 0, len(paths))
	for _, p := range paths {
		items = append(items, map[string]any{"path": "/tenants" + p, "name": p[strings.LastIndex(p, "/")+1:]})
	}
	return list(c, "/tenants", items)
}

type tenantBody struct {
	Name       *string `json:"name"`
	Descr      *string `json:"descr"`
	ParentPath *string `json:"parent_path"`
}

func (s *Server) createTenant(c *call) result {
	var b tenantBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	v.required("name", b.Name != nil)
	if b.Name != nil {
		v.pattern("name", *b.Name, reName)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	parent := "/root"
	if b.ParentPath != nil && *b.ParentPath != "" {
		parent = *b.ParentPath
	}
	if s.tenants[parent] == nil {
		return fail(notFound("parent tenant %s does not exist", parent))
	}
	path := parent + "/" + *b.Name
	if s.tenants[path] != nil {
		return fail(conflict("tenant %s already exists", path))
	}
	s.tenants[path] = newTenant(path)
	return ok("/tenants"+path, map[string]any{"path": "/tenants" + path, "name": *b.Name})
}

func (s *Server) listIPPools(c *call) result {
	names := make([]string, 0, len(s.pools))
	for n := range s.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	items := make([]any, 0, len(names))
	for _, n := range names {
		items = append(items, s.renderPool(n))
	}
	return list(c, "/access_network_ip_pools", items)
}

func (s *Server) getIPPool(c *call) result {
	name := c.r.PathValue("name")
	if !s.pools[name] {
		return fail(notFound("access_network_ip_pool %s does not exist", name))
	}
	return ok("/access_network_ip_pools/"+name, s.renderPool(name))
}

func (s *Server) renderPool(name string) map[string]any {
	paths := make([]any, 0, len(s.opts.Portals))
	for _, ip := range s.opts.Portals {
		paths = append(paths, map[string]any{"start_ip": ip, "netmask": 32})
	}
	return map[string]any{"path": "/access_network_ip_pools/" + name, "name": name, "descr": "", "network_paths": paths}
}
