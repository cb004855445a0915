//! The log file: groups appended and synced, read back after a crash.
//!
//! A record is a 20-byte header (magic, group number, payload length, CRC-32 of the three before
//! it and the payload) and the payload. Reading starts at the file's beginning and stops at the
//! first record that is not whole and valid, or is not the group after the one before it.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4650_5244; // "FPRD"
const HEADER: usize = 20;

/// One logged batch, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub number: u64,
    pub payload: Vec<u8>,
}

/// The open log file of one database.
pub struct RedoLog {
    file: File,
    path: PathBuf,
    capacity: u64,
    /// Where the next record goes.
    end: u64,
    /// The number the next record takes.
    next_group: u64,
    /// Where the last record started, while it may still be taken back.
    last_start: Option<u64>,
    record: Vec<u8>,
}

impl RedoLog {
    /// The log beside `database` (`<file>.redo`): opened, or created at `capacity` bytes and
    /// zero-filled. Blocking.
    pub fn open(database: &Path, capacity: u64) -> std::io::Result<RedoLog> {
        let path = RedoLog::path_for(database);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => create(&path, capacity)?,
            Err(error) => return Err(error),
        };
        let len = file.metadata()?.len();
        if len < capacity {
            zero_fill(&file, len, capacity)?;
            file.sync_all()?;
        }
        Ok(RedoLog {
            file,
            path,
            capacity: capacity.max(len),
            end: 0,
            next_group: 1,
            last_start: None,
            record: Vec::new(),
        })
    }

    /// Where the log of `database` is.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.file_name().unwrap_or_default().to_owned();
        name.push(".redo");
        database.with_file_name(name)
    }

    /// The groups the file holds, oldest first. Blocking.
    pub fn groups(&self) -> std::io::Result<Vec<Group>> {
        let mut bytes = vec![0; self.file.metadata()?.len() as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(read_groups(&bytes))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a group of `payload_len` bytes fits after the records since the last restart.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.end + (HEADER + payload_len) as u64 <= self.capacity
    }

    /// Whether any group was appended since the last restart.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Appends `payload` as group `number` and syncs it: once this returns, the group survives a
    /// crash. Numbers must follow each other from the database's position.
    pub fn append(&mut self, number: u64, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "group too large"))?;
        self.record.clear();
        self.record.extend_from_slice(&MAGIC.to_le_bytes());
        self.record.extend_from_slice(&number.to_le_bytes());
        self.record.extend_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.record[4..16]);
        crc.update(payload);
        self.record.extend_from_slice(&crc.finalize().to_le_bytes());
        self.record.extend_from_slice(payload);
        self.file.write_all_at(&self.record, self.end)?;
        self.file.sync_data()?;
        self.last_start = Some(self.end);
        self.end += self.record.len() as u64;
        self.next_group = number + 1;
        Ok(())
    }

    /// Takes the last appended group back (its transaction could not commit): it is no longer
    /// read once this returns `Ok`.
    pub fn retract_last(&mut self) -> std::io::Result<()> {
        let Some(start) = self.last_start.take() else {
            return Ok(());
        };
        self.file.write_all_at(&[0; HEADER], start)?;
        self.file.sync_data()?;
        self.end = start;
        self.next_group -= 1;
        Ok(())
    }

    /// The last group's transaction committed: it can no longer be taken back.
    pub fn settle(&mut self) {
        self.last_start = None;
    }

    /// Starts the log over: the database now holds every group appended so far durably.
    pub fn restart(&mut self) {
        self.end = 0;
        self.last_start = None;
    }

    /// The number the next group takes.
    pub fn next_group(&self) -> u64 {
        self.next_group
    }

    /// Continues numbering after `position`, the group the database holds (a log read back may
    /// end before it, or hold nothing).
    pub fn continue_after(&mut self, position: u64) {
        self.next_group = position + 1;
    }
}

fn create(path: &Path, capacity: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    zero_fill(&file, 0, capacity)?;
    file.sync_all()?;
    // The file's name must survive a crash as surely as what is written in it.
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

/// Writes zeros from `from` to `to`: blocks allocated now, so that a sync after an append never
/// has to write the file's allocation as well.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The whole records from the start of `bytes`, each the group after the one before.
pub(super) fn read_groups(bytes: &[u8]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let field = |range: std::ops::Range<usize>| &header[range];
        let magic = u32::from_le_bytes(field(0..4).try_into().expect("4 bytes"));
        let number = u64::from_le_bytes(field(4..12).try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(field(12..16).try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(field(16..20).try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(field(4..16));
        hasher.update(payload);
        let follows = groups.last().is_none_or(|last| number == last.number + 1);
        if magic != MAGIC || hasher.finalize() != crc || !follows {
            break;
        }
        groups.push(Group {
            number,
            payload: payload.to_vec(),
        });
        at += HEADER + len;
    }
    groups
}
