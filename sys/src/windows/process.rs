//! Process trees as Job Objects (a timeout or a kill ends every process the job started),
//! detached processes by creation flags, liveness by exit code.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::Arc;

use windows_sys::Win32::Foundation::STILL_ACTIVE;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, DETACHED_PROCESS, GetExitCodeProcess, OpenProcess,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE, TerminateProcess,
};

use super::check;

/// Exit code given to processes ended by [`Tree::kill`].
const KILLED: u32 = 1;

pub(crate) const HAS_SIGNALS: bool = false;

pub(crate) fn own_group(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
}

pub(crate) fn detach(cmd: &mut Command, _how: crate::process::Detach) {
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

pub(crate) fn new_session() {}

fn open(pid: u32, access: u32) -> io::Result<OwnedHandle> {
    // SAFETY: OpenProcess has no pointer arguments; a null result is an error.
    let h = unsafe { OpenProcess(access, 0, pid) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

fn running(h: &OwnedHandle) -> bool {
    let mut code = 0u32;
    // SAFETY: `h` is a valid process handle with query access; `code` is a valid out pointer.
    let ok = unsafe { GetExitCodeProcess(h.as_raw_handle(), &mut code) };
    ok != 0 && code == STILL_ACTIVE as u32
}

pub(crate) fn user_id() -> Option<u32> {
    None
}

pub(crate) fn alive(pid: u32) -> bool {
    open(pid, PROCESS_QUERY_LIMITED_INFORMATION).is_ok_and(|h| running(&h))
}

pub(crate) fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// A process and everything it started: a Job Object, or (for a PTY's program, which
/// ConPTY owns) the process alone.
#[derive(Debug, Clone)]
pub struct Tree(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    Job(OwnedHandle),
    Process(OwnedHandle),
}

impl Tree {
    /// Put `child` (and so all it starts from now on) in a new job that dies with its last
    /// handle. A process the child started before this call is not in the job.
    pub fn adopt(child: &tokio::process::Child) -> io::Result<Self> {
        let process = child
            .raw_handle()
            .ok_or_else(|| io::Error::other("the process has already been reaped"))?;
        // SAFETY: no security attributes, no name; a null result is an error.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle owned by nobody else.
        let job = unsafe { OwnedHandle::from_raw_handle(job) };
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is a valid "no limits".
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `info` is the structure the class names, with its exact size.
        check(unsafe {
            SetInformationJobObject(
                job.as_raw_handle(),
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        })?;
        // SAFETY: both handles are valid; the child's handle is borrowed for the call.
        check(unsafe { AssignProcessToJobObject(job.as_raw_handle(), process) })?;
        Ok(Self(Arc::new(Inner::Job(job))))
    }

    /// The program of a PTY (ConPTY ends the rest when the console closes).
    pub fn of_leader(pid: u32) -> io::Result<Self> {
        let h = open(pid, PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION)?;
        Ok(Self(Arc::new(Inner::Process(h))))
    }

    /// Windows has no polite request to a whole tree: this ends it, as [`Tree::kill`] does.
    pub fn terminate(&self) {
        self.kill();
    }

    /// As Ctrl-C would: a tree started without a console of its own cannot be sent one, so
    /// this ends it.
    pub fn interrupt(&self) {
        self.kill();
    }

    /// As a closing console would: ends the tree.
    pub fn hang_up(&self) {
        self.kill();
    }

    /// End the whole tree now.
    pub fn kill(&self) {
        // SAFETY: valid handles with terminate access.
        unsafe {
            match &*self.0 {
                Inner::Job(j) => TerminateJobObject(j.as_raw_handle(), KILLED),
                Inner::Process(p) => TerminateProcess(p.as_raw_handle(), KILLED),
            };
        }
    }

    /// True once no process of the tree is left.
    pub fn is_empty(&self) -> bool {
        match &*self.0 {
            Inner::Process(p) => !running(p),
            Inner::Job(j) => {
                // SAFETY: an all-zero accounting structure is valid to overwrite.
                let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION =
                    unsafe { std::mem::zeroed() };
                // SAFETY: `info` is the structure the class names, with its exact size.
                let ok = unsafe {
                    QueryInformationJobObject(
                        j.as_raw_handle(),
                        JobObjectBasicAccountingInformation,
                        (&mut info as *mut JOBOBJECT_BASIC_ACCOUNTING_INFORMATION).cast(),
                        std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                        std::ptr::null_mut(),
                    )
                };
                ok != 0 && info.ActiveProcesses == 0
            }
        }
    }
}
