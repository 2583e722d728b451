package subs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tgtun/tgtun/daemon/config"
)

// DefaultCacheDir is on tmpfs on OpenWrt: a subscription changes often and is fetched
// again after a reboot, so it never goes to flash. Its files hold the links' secrets:
// the directory is 0700 and the files 0600.
const DefaultCacheDir = "/var/run/tgtun/subscriptions"

// cacheEntry is a subscription's last good answer.
type cacheEntry struct {
	links    []string
	fetched  time.Time
	userinfo *Userinfo
	interval time.Duration
	announce string
}

// cachePath names the file after the subscription and a hash of its URL, so a changed
// URL never picks up the old one's links.
func cachePath(dir string, sub config.Subscription) string {
	sum := sha256.Sum256([]byte(sub.URL))
	return filepath.Join(dir, sub.Name+"-"+hex.EncodeToString(sum[:6])+".txt")
}

// writeCache stores e as a plain subscription body with its headers as "#key: value"
// lines (the form DecodeBody reads), atomically.
func writeCache(dir string, sub config.Subscription, e cacheEntry) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	path := cachePath(dir, sub)
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var b strings.Builder
	fmt.Fprintf(&b, "# tgtun cache of subscription %s from %s\n#tgtun-fetched: %s\n", sub.Name, RedactURL(sub.URL), e.fetched.UTC().Format(time.RFC3339))
	if e.userinfo != nil {
		fmt.Fprintf(&b, "#subscription-userinfo: %s\n", e.userinfo)
	}
	if e.interval > 0 {
		fmt.Fprintf(&b, "#profile-update-interval: %g\n", e.interval.Hours())
	}
	if e.announce != "" {
		fmt.Fprintf(&b, "#announce: %s\n", b64(e.announce))
	}
	for _, l := range e.links {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if _, err = tmp.WriteString(b.String()); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cache %s: %w", path, err)
	}
	return nil
}

// readCache reads what writeCache stored; the file is checked like a download.
func readCache(dir string, sub config.Subscription) (cacheEntry, error) {
	path := cachePath(dir, sub)
	f, err := os.Open(path)
	if err != nil {
		return cacheEntry{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBodyBytes+1))
	if err != nil {
		return cacheEntry{}, fmt.Errorf("cache %s: %w", path, err)
	}
	body, err := DecodeBody(data)
	if err != nil {
		return cacheEntry{}, fmt.Errorf("cache %s: %w", path, err)
	}
	e := cacheEntry{links: body.Links, interval: ParseInterval(body.Meta["profile-update-interval"]),
		announce: ParseText(body.Meta["announce"], 200)}
	if t, err := time.Parse(time.RFC3339, body.Meta["tgtun-fetched"]); err == nil {
		e.fetched = t
	}
	if u, ok := ParseUserinfo(body.Meta["subscription-userinfo"]); ok {
		e.userinfo = &u
	}
	return e, nil
}
