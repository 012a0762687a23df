"""Which R-peak (QRS) detector should the per-lead median beats use? A benchmark on real PTB-XL records.

Detection runs on lead II after a 0.5 Hz high-pass (Butterworth order 2, sosfiltfilt), as the median-beat pipeline
does. Candidates: wfdb.processing's `xqrs_detect` and `gqrs_detect`, and neurokit2's `ecg_peaks` methods. Each
neurokit2 method is run on the high-passed signal as is (`nk_<method>`) and, for the methods that neurokit2 pairs with
their own band-pass, after `nk.ecg_clean(hp, method=<method>)` as neurokit2 documents them (`nk_<method>+clean`; that
band-pass is causal, so it delays the peaks) and after the same band-pass applied zero-phase (`nk_<method>+zpclean`).
Options that apply to any detector (see `make_detectors`): `+pol` (polarity choice) and `+amp` (amplitude filter);
by default they are measured on nk_neurokit.

For each detector and each sampling rate (100 Hz: every record of `filename_lr`; 500 Hz: the records of `filename_hr`
present on disk) it reports
- seconds per record (detector call only, single thread): median and total;
- failures: exceptions, < 4 beats in the 10 s, implausible median RR (< 0.25 s or > 2.5 s), and their union;
- agreement: fraction of records whose beat count differs by > 1 from the consensus count (median over the `--voters`,
  one per algorithm), and sensitivity / PPV of the detections against consensus beats (beats that a majority of the
  voters mark, detections chained by gaps < 100 ms; matched within +-100 ms, so a late or early fiducial still counts);
- fiducial point: signed median and mean |offset| (ms) from each detection to the local max of |high-passed lead II|
  within +-60 ms, before and after refining each detection to that local max (one pass), and how often the refined
  points of a record change polarity (R vs S) beat to beat;
- for records at both rates, agreement of each detector's 100-Hz peaks with its own 500-Hz peaks (one-to-one
  matches within +-50 ms over max(n100, n500)), raw and refined, and the mean |time difference| of matched refined
  peaks (how stable the fiducial is across sampling rates).
It also reports import times (fresh interpreter, cold and after numpy/scipy/pandas/wfdb) and neurokit2's declared
dependencies with their installed sizes, and lists the records on which every detector fails.

Usage: python benchmarks/qrs_detectors.py [--limit N] [--out summary.csv] [--records-out per_record.csv]
                                          [--detectors a,b,...] [--extra] [--data /path/to/ptbxl]
neurokit2 is not a requirement of ecg_dml: install it only to run this benchmark
(`pip install neurokit2 -c requirements/constraints.txt`; without it the nk_* detectors are skipped).
"""
import os
for _v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMEXPR_NUM_THREADS', 'VECLIB_MAXIMUM_THREADS'):
    os.environ[_v] = '1'   # single thread, set before numpy is imported; inherited by the import-time subprocesses
import argparse, re, subprocess, sys, time, warnings
from importlib import metadata
from pathlib import Path
import numpy as np, pandas as pd, scipy.signal as ss

DATA = Path('/work/shared/data/ptbxl')
REPO = Path(__file__).resolve().parents[1]
# nk methods that neurokit2 pairs with their own band-pass in ecg_clean (a causal filter: `butterworth_zi`, sosfilt):
# (low Hz, high Hz, order) of that band-pass, also applied zero-phase (sosfiltfilt) by the `+zpclean` variants
NK_CLEANED = {'pantompkins1985': (5, 15, 1), 'hamilton2002': (8, 16, 1), 'elgendi2010': (8, 20, 2)}
NK_BRIEF = ('neurokit', 'pantompkins1985', 'hamilton2002', 'elgendi2010')
NK_EXTRA = ('kalidas2017', 'engzeemod2012', 'christov2004', 'rodrigues2021')
VOTERS = 'xqrs,gqrs,nk_neurokit,nk_pantompkins1985+zpclean,nk_hamilton2002+zpclean,nk_elgendi2010+zpclean'
TOL = 0.050          # s, 100-Hz vs 500-Hz peak matching tolerance
TOL_BEAT = 0.100     # s, is-it-the-same-beat tolerance of the consensus (raw detections, whatever their fiducial)
REFINE_WIN = 0.060   # s, half-width of the local-max window
AMP_FRAC = 0.3       # `+amp`: minimum |hp| at a detection, as a fraction of the record's median

def highpass(x, fs):
    return ss.sosfiltfilt(ss.butter(2, 0.5, 'highpass', fs=fs, output='sos'), x)

def make_detectors(names):
    """name -> f(hp, fs) -> peak indices. A name is a base detector (`xqrs`, `gqrs`, `nk_<method>`) with optional
    suffixes: `+clean` / `+zpclean` (neurokit2's band-pass of that method, causal / zero-phase), `+pol` (detect on hp
    and on -hp, keep the polarity whose detections have the larger median amplitude: for QRS complexes that are
    mostly negative in lead II), `+amp` (drop detections whose |hp| local max is < AMP_FRAC x the record's median).
    neurokit2 is imported only if an nk_* detector is asked for."""
    dets = {}
    nk = None
    if any(n.startswith('nk_') for n in names):
        try: import neurokit2 as nk
        except ImportError: print('neurokit2 not installed: skipping', [n for n in names if n.startswith('nk_')])
    for n in names:
        base, *opts = n.split('+')
        if unknown := set(opts) - {'clean', 'zpclean', 'pol', 'amp'}: raise ValueError(f'unknown option {unknown} in {n}')
        if base in ('xqrs', 'gqrs'):
            from wfdb import processing as wp
            core = (lambda x, fs: wp.xqrs_detect(x, fs, verbose=False)) if base == 'xqrs' else (lambda x, fs: wp.gqrs_detect(x, fs))
        elif base.startswith('nk_'):
            if nk is None: continue
            m = base[3:]
            if ({'clean', 'zpclean'} & set(opts)) and m not in NK_CLEANED: raise ValueError(f'no band-pass known for {n}')
            def core(x, fs, m=m, opts=tuple(opts)):
                if 'clean' in opts: x = nk.ecg_clean(x, sampling_rate=fs, method=m)
                elif 'zpclean' in opts:
                    lo, hi, order = NK_CLEANED[m]
                    x = ss.sosfiltfilt(ss.butter(order, [lo, hi], 'bandpass', fs=fs, output='sos'), x)
                return nk.ecg_peaks(x, sampling_rate=fs, method=m)[1]['ECG_R_Peaks']
        else: raise ValueError(f'unknown detector {n}')
        def f(hp, fs, core=core, pol='pol' in opts, amp='amp' in opts):
            p = np.unique(np.asarray(core(hp, fs), dtype=int))
            if pol:
                q = np.unique(np.asarray(core(-hp, fs), dtype=int))
                if len(q) and (not len(p) or np.median(-hp[q]) > np.median(hp[p])): p = q
            if amp and len(p) >= 3:
                a = np.abs(hp[refine(p, hp, fs)]); p = p[a >= AMP_FRAC * np.median(a)]
            return p
        dets[n] = f
    return dets

def refine(peaks, hp, fs):
    "each peak moved to the max of |hp| within +-REFINE_WIN (one pass)"
    w, a, n = int(round(REFINE_WIN * fs)), np.abs(hp), len(hp)
    return np.array([max(p - w, 0) + int(np.argmax(a[max(p - w, 0):min(p + w + 1, n)])) for p in peaks], dtype=int)

def match(a, b, tol):
    "one-to-one greedy matches of two sorted time arrays within tol: list of (i, j)"
    i = j = 0; pairs = []
    while i < len(a) and j < len(b):
        d = b[j] - a[i]
        if abs(d) <= tol: pairs.append((i, j)); i += 1; j += 1
        elif d < 0: j += 1
        else: i += 1
    return pairs

def consensus_beats(peaks_by_det, fs, need):
    "times (s) of beats marked by >= need distinct voters within chains of gaps < TOL_BEAT"
    pts = sorted((t, d) for d, p in peaks_by_det.items() for t in np.unique(p) / fs)
    beats, cur = [], []
    for t, d in pts + [(np.inf, None)]:
        if cur and t - cur[-1][0] >= TOL_BEAT:
            if len({dd for _, dd in cur}) >= need: beats.append(float(np.median([tt for tt, _ in cur])))
            cur = []
        cur.append((t, d))
    return np.array(beats)

def record_list(data, rate, limit):
    df = pd.read_csv(data / 'ptbxl_database.csv', usecols=['ecg_id', 'filename_lr', 'filename_hr'])
    col = 'filename_lr' if rate == 100 else 'filename_hr'
    df = df[[(data / f'{p}.hea').exists() for p in df[col]]]
    return list(zip(df.ecg_id, df[col]))[:limit]

def run_rate(data, rate, dets, limit):
    import wfdb
    recs, out, hps = record_list(data, rate, limit), [], {}
    t0 = time.perf_counter()
    for k, (eid, path) in enumerate(recs):
        sig, fields = wfdb.rdsamp(str(data / path))
        fs = fields['fs']; assert fs == rate, (path, fs)
        hp = highpass(sig[:, 1], fs); hps[eid] = hp
        for name, f in dets.items():
            err, peaks = None, None
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                t = time.perf_counter()
                try: peaks = np.sort(np.asarray(f(hp, fs), dtype=int))
                except Exception as e: err = f'{type(e).__name__}: {e}'[:200]
                dt = time.perf_counter() - t
            out.append(dict(rate=rate, ecg_id=eid, detector=name, seconds=dt, error=err, peaks=peaks))
        if (k + 1) % 250 == 0: print(f'  {rate} Hz: {k + 1}/{len(recs)} records, {time.perf_counter() - t0:.0f} s', flush=True)
    return pd.DataFrame(out), hps

def per_record_metrics(df, hps, voters):
    "adds n, rr, failure flags, offsets, refined peaks, consensus agreement to the long per-(record, detector) frame"
    rows = []
    for (rate, eid), g in df.groupby(['rate', 'ecg_id'], sort=False):
        hp, fs = hps[rate][eid], rate
        ref = {r.detector: refine(r.peaks, hp, fs) if r.peaks is not None else None for r in g.itertuples()}
        vp = {r.detector: r.peaks for r in g.itertuples() if r.detector in voters and r.peaks is not None}
        counts = [len(r.peaks) for r in g.itertuples() if r.detector in voters and r.peaks is not None]
        n_cons = float(np.median(counts)) if counts else np.nan
        cbeats = consensus_beats(vp, fs, need=len(voters) // 2 + 1)
        for r in g.itertuples():
            d = dict(rate=rate, ecg_id=eid, detector=r.detector, seconds=r.seconds, error=r.error, n_consensus=n_cons,
                     n_consensus_beats=len(cbeats))
            if r.peaks is None:
                rows.append(d | dict(exception=True, n=np.nan)); continue
            p, rp = r.peaks, ref[r.detector]
            rr = np.median(np.diff(p)) / fs if len(p) >= 2 else np.nan
            off = (rp - p) * 1000 / fs
            off2 = (refine(rp, hp, fs) - rp) * 1000 / fs
            urp = np.unique(rp)
            sgn = np.sign(hp[urp]); maj = np.sign(sgn.sum()) or 1
            m = match(np.unique(p) / fs, cbeats, TOL_BEAT)
            d |= dict(exception=False, n=len(p), median_rr=rr, lt4=len(p) < 4,
                      bad_rr=bool(len(p) >= 2 and not 0.25 <= rr <= 2.5),
                      count_disagree=bool(abs(len(p) - n_cons) > 1),
                      off_signed_sum=off.sum(), off_abs_sum=np.abs(off).sum(), off_gt20=(np.abs(off) > 20).sum(),
                      off_after_abs_sum=np.abs(off2).sum(), n_offsets=len(off), n_refined_dupes=len(rp) - len(urp),
                      polarity_flips=int((sgn != maj).sum()) if len(urp) >= 4 else 0,
                      n_polarity=len(urp) if len(urp) >= 4 else 0,
                      tp=len(m), n_unique=len(np.unique(p)), off_list=off, peaks=p, peaks_ref=rp)
            rows.append(d)
    pr = pd.DataFrame(rows)
    pr['lt4'] = pr['lt4'].fillna(False).astype(bool); pr['bad_rr'] = pr['bad_rr'].fillna(False).astype(bool)
    pr['fail'] = pr.exception | pr.lt4 | pr.bad_rr
    return pr

def summarize(pr):
    rows = []
    for (det, rate), g in pr.groupby(['detector', 'rate'], sort=False):
        ok = g[~g.exception]
        offs = np.concatenate([o for o in ok.off_list if len(o)]) if len(ok) else np.array([])
        rows.append(dict(
            detector=det, rate=rate, records=len(g),
            s_median=g.seconds.median(), s_total=g.seconds.sum(),
            exceptions=g.exception.mean(), lt4_beats=g.lt4.mean(), bad_rr=g.bad_rr.mean(), any_fail=g.fail.mean(),
            count_off_by_gt1=ok.count_disagree.mean(),
            sens=ok.tp.sum() / g.n_consensus_beats[~g.exception].sum(), ppv=ok.tp.sum() / ok.n_unique.sum(),
            off_med_ms=float(np.median(offs)) if len(offs) else np.nan,
            off_mean_abs_ms=ok.off_abs_sum.sum() / ok.n_offsets.sum(),
            off_gt20ms=ok.off_gt20.sum() / ok.n_offsets.sum(),
            off_after_ms=ok.off_after_abs_sum.sum() / ok.n_offsets.sum(),
            refined_dupes=ok.n_refined_dupes.sum() / ok.n_offsets.sum(),
            polarity_flips=ok.polarity_flips.sum() / max(ok.n_polarity.sum(), 1)))
    return pd.DataFrame(rows)

def cross_rate(pr):
    "per detector, records at both rates: 100-Hz peaks vs own 500-Hz peaks"
    both = set(pr.ecg_id[pr.rate == 100]) & set(pr.ecg_id[pr.rate == 500])
    rows = []
    for det, g in pr[pr.ecg_id.isin(both) & ~pr.exception].groupby('detector', sort=False):
        a, b = g[g.rate == 100].set_index('ecg_id'), g[g.rate == 500].set_index('ecg_id')
        ids = sorted(set(a.index) & set(b.index))
        raw_m = ref_m = tot = 0; dts = []; rec_all = 0
        for i in ids:
            p100, p500, r100, r500 = a.at[i, 'peaks'], b.at[i, 'peaks'], a.at[i, 'peaks_ref'], b.at[i, 'peaks_ref']
            mr = match(p100 / 100, p500 / 500, TOL)
            u100, u500 = np.unique(r100), np.unique(r500)
            mf = match(u100 / 100, u500 / 500, TOL)
            raw_m += len(mr); ref_m += len(mf); tot += max(len(p100), len(p500))
            dts += [abs(u100[x] / 100 - u500[y] / 500) * 1000 for x, y in mf]
            rec_all += len(mr) == max(len(p100), len(p500))
        rows.append(dict(detector=det, records_both=len(ids), match_raw=raw_m / max(tot, 1),
                         match_refined=ref_m / max(tot, 1), records_all_matched=rec_all / max(len(ids), 1),
                         refined_dt_mean_ms=float(np.mean(dts)) if dts else np.nan,
                         refined_dt_p95_ms=float(np.percentile(dts, 95)) if dts else np.nan))
    return pd.DataFrame(rows)

def import_times(reps=5):
    pre = 'import numpy, scipy.signal, pandas, wfdb; '
    rows = []
    for lib in ('wfdb.processing', 'neurokit2'):
        for label, setup in (('cold', ''), ('after numpy/scipy/pandas/wfdb', pre)):
            if lib == 'wfdb.processing' and setup: setup = 'import numpy, scipy.signal, pandas; '
            code = f'import time; {setup}t = time.perf_counter(); import {lib}; print(time.perf_counter() - t)'
            ts = []
            for _ in range(reps):
                r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
                if r.returncode: ts = None; break
                ts.append(float(r.stdout.strip().splitlines()[-1]))
            rows.append(dict(library=lib, condition=label.replace('/wfdb', '') if lib == 'wfdb.processing' else label,
                             import_s_median=np.median(ts) if ts else np.nan))
    return pd.DataFrame(rows)

def dist_size(name):
    try: files = metadata.distribution(name).files or []
    except metadata.PackageNotFoundError: return np.nan
    return sum(f.locate().stat().st_size for f in files if f.locate().exists()) / 2**20

def nk_dependencies():
    try: req = metadata.requires('neurokit2') or []
    except metadata.PackageNotFoundError: return pd.DataFrame()
    cons = REPO / 'requirements' / 'constraints.txt'
    pinned = {re.split('==', l)[0].strip().lower().replace('_', '-')
              for l in cons.read_text().splitlines() if '==' in l} if cons.exists() else set()
    rows = [dict(package='neurokit2', spec='', in_repo_env=False, version=metadata.version('neurokit2'),
                 installed_MB=dist_size('neurokit2'))]
    for r in req:
        if 'extra ==' in r: continue
        name = re.split(r'[<>=!~ ;\[]', r, 1)[0]
        key = name.lower().replace('_', '-')
        try: v = metadata.version(name)
        except metadata.PackageNotFoundError: v = None
        rows.append(dict(package=name, spec=r[len(name):].strip(), in_repo_env=key in pinned, version=v,
                         installed_MB=dist_size(name) if v else np.nan))
    return pd.DataFrame(rows)

def describe_failures(pr, data, hps):
    "records on which every detector fails, with what lead II looks like"
    meta = pd.read_csv(data / 'ptbxl_database.csv', index_col='ecg_id')
    rows = []
    for rate, g in pr.groupby('rate'):
        allfail = g.groupby('ecg_id').fail.all()
        for eid in allfail[allfail].index:
            hp = hps[rate][eid]
            f, pxx = ss.welch(hp, fs=rate, nperseg=min(len(hp), 2 * rate))
            hf = pxx[f > 0.4 * rate].sum() / pxx[f > 1].sum()
            gr = g[g.ecg_id == eid].set_index('detector')
            m = meta.loc[eid]
            rows.append(dict(rate=rate, ecg_id=eid, ptp_mV=np.ptp(hp), std_mV=hp.std(),
                             flat_frac=float(np.mean(np.diff(hp) == 0)), hf_power_frac=hf,
                             counts=' '.join(f'{d}:{"E" if gr.at[d, "exception"] else int(gr.at[d, "n"])}' for d in gr.index),
                             noise='/'.join(str(m[c]) for c in ('baseline_drift', 'static_noise', 'burst_noise', 'electrodes_problems')
                                            if isinstance(m[c], str)),
                             pacemaker=m.pacemaker if isinstance(m.pacemaker, str) else '',
                             scp=m.scp_codes, report=str(m.report)[:60]))
    return pd.DataFrame(rows)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--limit', type=int, default=None, help='first N records per rate')
    ap.add_argument('--out', default=None, help='summary CSV (one row per detector x rate)')
    ap.add_argument('--records-out', default=None, help='per-record CSV (counts, RR, failure flags, errors)')
    ap.add_argument('--data', type=Path, default=DATA)
    ap.add_argument('--rates', default='100,500')
    ap.add_argument('--detectors', default=None, help='comma list; default: xqrs, gqrs, nk_<method>[+clean]')
    ap.add_argument('--extra', action='store_true', help=f'also neurokit2 methods {", ".join(NK_EXTRA)} and nk_elgendi2010+zpclean+pol+amp')
    ap.add_argument('--voters', default=VOTERS, help='detectors whose median count / majority beats form the consensus')
    ap.add_argument('--no-import-times', action='store_true')
    a = ap.parse_args()
    names = a.detectors.split(',') if a.detectors else (
        ['xqrs', 'gqrs'] + [f'nk_{m}' for m in NK_BRIEF] + [f'nk_{m}+{c}' for c in ('clean', 'zpclean') for m in NK_CLEANED]
        + ['nk_neurokit+amp', 'nk_neurokit+pol', 'nk_neurokit+pol+amp'] + ([f'nk_{m}' for m in NK_EXTRA] + ['nk_elgendi2010+zpclean+pol+amp'] if a.extra else []))
    dets = make_detectors(names)
    voters = [v for v in a.voters.split(',') if v in dets]
    print(f'detectors: {", ".join(dets)}\nconsensus voters: {", ".join(voters)}  (single thread, OMP_NUM_THREADS=1)')
    frames, hps = [], {}
    for rate in map(int, a.rates.split(',')):
        df, hps[rate] = run_rate(a.data, rate, dets, a.limit); frames.append(df)
    pr = per_record_metrics(pd.concat(frames, ignore_index=True), hps, voters)
    pd.set_option('display.width', 250, 'display.max_columns', 40, 'display.max_colwidth', 120)
    summ = summarize(pr)
    print('\n== per detector and rate (fractions unless _s/_ms; offsets = local max of |hp II| within +-60 ms minus detection)')
    print(summ.to_string(index=False, float_format=lambda v: f'{v:.4g}'))
    cr = cross_rate(pr)
    if len(cr):
        print('\n== 100 Hz vs own 500 Hz peaks (records at both rates; one-to-one matches within +-50 ms / max(n100, n500))')
        print(cr.to_string(index=False, float_format=lambda v: f'{v:.4g}'))
    fails = describe_failures(pr, a.data, hps)
    print('\n== records on which every detector fails (exception, < 4 beats or median RR outside 0.25-2.5 s)')
    print(fails.to_string(index=False, float_format=lambda v: f'{v:.3g}') if len(fails) else 'none')
    errs = pr[pr.exception].groupby(['detector', 'rate']).error.agg(lambda s: s.value_counts().index[0])
    if len(errs): print('\n== most frequent exception per detector\n' + errs.to_string())
    if not a.no_import_times:
        print('\n== import time (fresh interpreter, median of 5)')
        print(import_times().to_string(index=False, float_format=lambda v: f'{v:.3f}'))
        deps = nk_dependencies()
        if len(deps):
            print('\n== neurokit2 and its declared (non-extra) dependencies; in_repo_env = pinned in requirements/constraints.txt')
            print(deps.to_string(index=False, float_format=lambda v: f'{v:.1f}'))
    if a.out:
        summ.merge(cr, on='detector', how='left').to_csv(a.out, index=False); print(f'\nwrote {a.out}')
    if a.records_out:
        cols = ['rate', 'ecg_id', 'detector', 'seconds', 'error', 'exception', 'n', 'n_consensus', 'median_rr',
                'lt4', 'bad_rr', 'fail', 'count_disagree', 'tp', 'n_unique', 'n_consensus_beats']
        pr[cols].to_csv(a.records_out, index=False); print(f'wrote {a.records_out}')

if __name__ == '__main__':
    main()
