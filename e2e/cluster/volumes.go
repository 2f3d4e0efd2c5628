package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// env builds a container's environment: a base PATH, the API service
// variables, KUBECONFIG for the pod's ServiceAccount, envFrom, then env with
// fieldRef / configMapKeyRef / secretKeyRef and $(VAR) expansion.
func (rt *podRuntime) env(pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	set("HOME", "/root")
	set("HOSTNAME", pod.Name)
	set("KUBERNETES_SERVICE_HOST", kubeAPIVIP)
	set("KUBERNETES_SERVICE_PORT", "443")
	set("KUBECONFIG", filepath.Join(rt.dir, "kubeconfig"))
	for _, ef := range c.EnvFrom {
		data, err := rt.sourceData(pod.Namespace, ef.ConfigMapRef, ef.SecretRef)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			set(ef.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, vars))
			continue
		}
		v, err := rt.envValue(pod, e)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

func (rt *podRuntime) envValue(pod *corev1.Pod, e corev1.EnvVar) (string, error) {
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		switch vf.FieldRef.FieldPath {
		case "metadata.name":
			return pod.Name, nil
		case "metadata.namespace":
			return pod.Namespace, nil
		case "metadata.uid":
			return string(pod.UID), nil
		case "spec.nodeName":
			return pod.Spec.NodeName, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, nil
		case "status.podIP", "status.podIPs":
			return rt.ip, nil
		case "status.hostIP", "status.hostIPs":
			return rt.node.IP, nil
		}
		if k, ok := strings.CutPrefix(vf.FieldRef.FieldPath, "metadata.labels['"); ok {
			return pod.Labels[strings.TrimSuffix(k, "']")], nil
		}
		if k, ok := strings.CutPrefix(vf.FieldRef.FieldPath, "metadata.annotations['"); ok {
			return pod.Annotations[strings.TrimSuffix(k, "']")], nil
		}
		return "", fmt.Errorf("fieldRef %q is not supported", vf.FieldRef.FieldPath)
	case vf.ConfigMapKeyRef != nil:
		cm, err := rt.k.configMaps.ConfigMaps(pod.Namespace).Get(vf.ConfigMapKeyRef.Name)
		if err != nil {
			return "", optional(err, vf.ConfigMapKeyRef.Optional)
		}
		return cm.Data[vf.ConfigMapKeyRef.Key], nil
	case vf.SecretKeyRef != nil:
		s, err := rt.k.secrets.Secrets(pod.Namespace).Get(vf.SecretKeyRef.Name)
		if err != nil {
			return "", optional(err, vf.SecretKeyRef.Optional)
		}
		return string(s.Data[vf.SecretKeyRef.Key]), nil
	case vf.ResourceFieldRef != nil:
		return "0", nil
	}
	return "", fmt.Errorf("valueFrom has no source")
}

func optional(err error, opt *bool) error {
	if opt != nil && *opt {
		return nil
	}
	return err
}

func (rt *podRuntime) sourceData(ns string, cmRef *corev1.ConfigMapEnvSource, secRef *corev1.SecretEnvSource) (map[string]string, error) {
	out := map[string]string{}
	if cmRef != nil {
		cm, err := rt.k.configMaps.ConfigMaps(ns).Get(cmRef.Name)
		if err != nil {
			return nil, optional(err, cmRef.Optional)
		}
		for k, v := range cm.Data {
			out[k] = v
		}
	}
	if secRef != nil {
		s, err := rt.k.secrets.Secrets(ns).Get(secRef.Name)
		if err != nil {
			return nil, optional(err, secRef.Optional)
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
	}
	return out, nil
}

// writeVolumes materialises configMap, secret, emptyDir and projected
// volumes under the pod's folder. ConfigMap and Secret contents are swapped
// in atomically through a ..data symlink, as the kubelet's atomic writer
// does, so programs watching the files (CoreDNS's reload) see one change.
func (rt *podRuntime) writeVolumes(pod *corev1.Pod) error {
	if rt.volumes == nil {
		rt.volumes = map[string]string{}
	}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(rt.dir, "volumes", v.Name)
		rt.volumes[v.Name] = dir
		files := map[string][]byte{}
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
			continue
		case v.ConfigMap != nil:
			cm, err := rt.k.configMaps.ConfigMaps(pod.Namespace).Get(v.ConfigMap.Name)
			if err != nil {
				if err := optional(err, v.ConfigMap.Optional); err != nil {
					return fmt.Errorf("volume %s: configMap %s: %w", v.Name, v.ConfigMap.Name, err)
				}
				break
			}
			all := map[string][]byte{}
			for k, s := range cm.Data {
				all[k] = []byte(s)
			}
			for k, b := range cm.BinaryData {
				all[k] = b
			}
			files = project(all, v.ConfigMap.Items)
		case v.Secret != nil:
			s, err := rt.k.secrets.Secrets(pod.Namespace).Get(v.Secret.SecretName)
			if err != nil {
				if err := optional(err, v.Secret.Optional); err != nil {
					return fmt.Errorf("volume %s: secret %s: %w", v.Name, v.Secret.SecretName, err)
				}
				break
			}
			files = project(s.Data, v.Secret.Items)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ConfigMap != nil:
					if cm, err := rt.k.configMaps.ConfigMaps(pod.Namespace).Get(src.ConfigMap.Name); err == nil {
						all := map[string][]byte{}
						for k, s := range cm.Data {
							all[k] = []byte(s)
						}
						for k, b := range project(all, src.ConfigMap.Items) {
							files[k] = b
						}
					}
				case src.ServiceAccountToken != nil:
					if b, err := os.ReadFile(filepath.Join(rt.dir, "serviceaccount", "token")); err == nil {
						files[src.ServiceAccountToken.Path] = b
					}
				case src.DownwardAPI != nil:
					for _, it := range src.DownwardAPI.Items {
						if it.FieldRef == nil {
							continue
						}
						val, err := rt.envValue(pod, corev1.EnvVar{Name: it.Path, ValueFrom: &corev1.EnvVarSource{FieldRef: it.FieldRef}})
						if err != nil {
							return fmt.Errorf("volume %s: downwardAPI %s: %w", v.Name, it.Path, err)
						}
						files[it.Path] = []byte(val)
					}
				}
			}
		default:
			continue
		}
		if err := atomicWrite(dir, files); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return nil
}

func project(all map[string][]byte, items []corev1.KeyToPath) map[string][]byte {
	if len(items) == 0 {
		return all
	}
	out := map[string][]byte{}
	for _, it := range items {
		if b, ok := all[it.Key]; ok {
			out[it.Path] = b
		}
	}
	return out
}

// atomicWrite writes files into a fresh timestamped folder, points ..data at
// it with one rename, and keeps top-level symlinks for every file.
func atomicWrite(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cur, _ := os.Readlink(filepath.Join(dir, "..data"))
	if cur != "" && sameFiles(filepath.Join(dir, cur), files) {
		return nil
	}
	ts := "..data_" + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	for name, b := range files {
		p := filepath.Join(tsDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(tsDir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		top := strings.SplitN(name, "/", 2)[0]
		names = append(names, top)
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
				return err
			}
		}
	}
	sort.Strings(names)
	// Remove links to files that are gone, and the old data folder.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "..") {
			if strings.HasPrefix(n, "..data_") && n != ts && n != "..data_tmp" {
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
			continue
		}
		if i := sort.SearchStrings(names, n); i >= len(names) || names[i] != n {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
	return nil
}

func sameFiles(dir string, files map[string][]byte) bool {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != string(files[rel]) {
			return fmt.Errorf("differs")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// mounts lists the container's mounts as SRC:DST[:ro] for pod-init,
// including the ServiceAccount folder unless automounting is off.
func (rt *podRuntime) mounts(pod *corev1.Pod, c *corev1.Container) []string {
	var out []string
	hasSA := false
	for _, m := range c.VolumeMounts {
		src, ok := rt.volumes[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
		}
		s := src + ":" + m.MountPath
		if m.ReadOnly {
			s += ":ro"
		}
		if m.MountPath == saMountPath {
			hasSA = true
		}
		out = append(out, s)
	}
	auto := pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken
	if auto && !hasSA {
		out = append(out, filepath.Join(rt.dir, "serviceaccount")+":"+saMountPath+":ro")
	}
	return out
}
