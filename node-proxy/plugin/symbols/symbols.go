package symbols

import "reflect"

//go:generate go run ./internal/gen bufio bytes cmp compress/bzip2 compress/flate compress/gzip compress/lzw compress/zlib container/heap container/list container/ring context crypto crypto/aes crypto/cipher crypto/ecdh crypto/ecdsa crypto/ed25519 crypto/elliptic crypto/hmac crypto/md5 crypto/rand crypto/rsa crypto/sha1 crypto/sha256 crypto/sha512 crypto/subtle crypto/tls crypto/x509 crypto/x509/pkix encoding encoding/ascii85 encoding/asn1 encoding/base32 encoding/base64 encoding/binary encoding/csv encoding/hex encoding/json encoding/pem encoding/xml errors fmt hash hash/adler32 hash/crc32 hash/crc64 hash/fnv hash/maphash html html/template io io/ioutil log maps math math/big math/bits math/cmplx math/rand math/rand/v2 mime mime/multipart mime/quotedprintable net net/http net/http/cookiejar net/http/httptest net/http/httptrace net/http/httputil net/mail net/netip net/textproto net/url path regexp regexp/syntax slices sort strconv strings sync sync/atomic text/scanner text/tabwriter text/template text/template/parse time unicode unicode/utf16 unicode/utf8

// Table holds symbol tables keyed as yaegi's interp.Exports is (the same
// type): "net/http/http" is package net/http, named http; under it each
// exported name of the package, and "_Name" for the wrapper type that lets
// interpreted values implement interface Name.
type Table = map[string]map[string]reflect.Value

// Build returns the tables of all the packages, newly built (about 2,500
// values; some 150 kB of heap), plus "." holding the MapTypes of yaegi's
// stdlib: the composed-interface wrappers and the functions that treat
// arguments implementing fmt.Stringer, json.Marshaler and the like
// specially. Callers build once and keep the result (node-proxy/plugin
// does so on its first plugin load).
//
// Package variables appear as settable values that are the process's own
// variables.
func Build() Table {
	t := make(Table, len(adders)+1)
	for _, add := range adders {
		add(t)
	}
	t["."] = map[string]reflect.Value{"MapTypes": reflect.ValueOf(mapTypes())}
	return t
}

// Packages returns the import paths that have a table, sorted, without
// building the tables.
func Packages() []string {
	return append([]string(nil), packages...)
}
