package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// checkKeys walks the JSON document alongside the Go type it decodes into
// and rejects what encoding/json would silently accept: object keys that
// match a field only case-insensitively ("targetport" for "targetPort") and
// keys repeated in one object (where the last one would win). The path in
// the error uses the JSON names, like the validator's.
func checkKeys(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return walk(dec, t, "")
}

func walk(dec *json.Decoder, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawType {
		// Free-form (a plugin's config): its owner decides what it accepts.
		var skip json.RawMessage
		return dec.Decode(&skip)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // scalar
	}
	switch d {
	case '[':
		elem := anyType
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case '{':
		fields := map[string]reflect.Type(nil)
		var elem reflect.Type = anyType
		if t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		} else if t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			k, _ := kt.(string)
			kp := k
			if path != "" {
				kp = path + "." + k
			}
			if t.Kind() == reflect.Map {
				kp = path + "[" + k + "]"
			}
			if seen[k] {
				return fmt.Errorf("%s: key appears twice in one object; keep one", kp)
			}
			seen[k] = true
			next := elem
			if fields != nil {
				ft, ok := fields[k]
				if !ok {
					for name := range fields {
						if strings.EqualFold(name, k) {
							return fmt.Errorf("%s: unknown field; did you mean %q? (field names are case-sensitive)", kp, name)
						}
					}
					return fmt.Errorf("%s: unknown field", kp)
				}
				next = ft
			}
			if err := walk(dec, next, kp); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // closing delimiter
	return err
}

var (
	anyType = reflect.TypeFor[any]()
	rawType = reflect.TypeFor[json.RawMessage]()
)

func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		ft := f.Type
		if ft == reflect.TypeFor[Duration]() {
			ft = anyType
		}
		m[name] = ft
	}
	return m
}
