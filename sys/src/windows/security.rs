//! Security descriptors that admit only the current user (and SYSTEM), for the data dir and
//! the named pipes.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::check;

/// A security descriptor made from SDDL, freed on drop.
pub(crate) struct Descriptor(*mut c_void);

impl Descriptor {
    /// Parse `sddl`.
    pub(crate) fn from_sddl(sddl: &str) -> io::Result<Self> {
        let wide = wide(sddl);
        let mut sd: *mut c_void = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated and outlives the call; `sd` receives a
        // LocalAlloc'd descriptor that we own and free in Drop.
        check(unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(Self(sd))
    }

    /// The raw descriptor, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ConvertStringSecurityDescriptorToSecurityDescriptorW,
        // which documents LocalFree as its release; it is freed once.
        unsafe {
            LocalFree(self.0 as HLOCAL);
        }
    }
}

/// `s` as a NUL-terminated UTF-16 string.
pub(crate) fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The current user's SID in string form (`S-1-5-21-…`).
pub(crate) fn user_sid() -> io::Result<String> {
    let mut token = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle; `token` receives a real handle that
    // OwnedHandle closes.
    check(unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) })?;
    // SAFETY: `token` is a fresh handle owned by nobody else.
    let token = unsafe { OwnedHandle::from_raw_handle(token) };
    let mut len = 0u32;
    // SAFETY: a size query: a null buffer of length 0; `len` receives the size needed.
    unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            std::ptr::null_mut(),
            0,
            &mut len,
        )
    };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64 words keep the TOKEN_USER header aligned.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` holds at least `len` bytes, as the size query asked for.
    check(unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    })?;
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into `buf`.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut s: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is valid while `buf` lives; `s` receives a LocalAlloc'd string.
    check(unsafe { ConvertSidToStringSidW(sid, &mut s) })?;
    let mut n = 0;
    // SAFETY: `s` is NUL-terminated; we read up to the NUL, then free it once.
    let out = unsafe {
        while *s.add(n) != 0 {
            n += 1;
        }
        let out = String::from_utf16_lossy(std::slice::from_raw_parts(s, n));
        LocalFree(s as HLOCAL);
        out
    };
    Ok(out)
}

/// SDDL granting `rights` to the current user and SYSTEM only, protected from inheritance;
/// `flags` are the ACE flags (`OICI` to pass it on to a directory's contents).
pub(crate) fn owner_only(rights: &str, flags: &str) -> io::Result<String> {
    let me = user_sid()?;
    Ok(format!(
        "D:P(A;{flags};{rights};;;{me})(A;{flags};{rights};;;SY)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_has_a_sid_and_owner_only_sddl_parses() -> io::Result<()> {
        let sid = user_sid()?;
        assert!(sid.starts_with("S-1-"), "{sid}");
        let sddl = owner_only("GA", "")?;
        assert!(sddl.contains(&sid));
        let d = Descriptor::from_sddl(&sddl)?;
        assert!(!d.as_ptr().is_null());
        assert!(Descriptor::from_sddl("not sddl").is_err());
        Ok(())
    }
}
