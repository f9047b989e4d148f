"""zoo.weights: list, download (served from 127.0.0.1, never the internet), verify, export; every failure path
leaves the target folder as it was."""
import hashlib
import json

import pytest
import safetensors.torch
import timm
import torch

from zoo import weights
from _http import serve

ARCH = 'inceptionnext_atto'
NAME = 'inceptionnext_atto.sail_in1k'


@pytest.fixture(scope='module')
def atto_state():
    torch.manual_seed(0)
    return timm.create_model(ARCH).state_dict()


@pytest.fixture(scope='module')
def files(tmp_path_factory, atto_state):
    """Bytes of the files the test servers hand out: good weights, truncated, foreign, 1-channel stem."""
    folder = tmp_path_factory.mktemp('served')
    torch.save(atto_state, folder / 'good.pth')
    good = (folder / 'good.pth').read_bytes()
    safetensors.torch.save_file(atto_state, folder / 'good.safetensors')
    torch.save(timm.create_model('resnet10t').state_dict(), folder / 'foreign.pth')
    gray = dict(atto_state, **{'stem.0.weight': atto_state['stem.0.weight'][:, :1].clone()})
    torch.save(gray, folder / 'gray.pth')
    return {
        'good.pth': good,
        'good.safetensors': (folder / 'good.safetensors').read_bytes(),
        'truncated.pth': good[: len(good) // 2],
        'foreign.pth': (folder / 'foreign.pth').read_bytes(),
        'gray.pth': (folder / 'gray.pth').read_bytes(),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope='module')
def server(files):
    """A local file server: `/NAME` serves files[NAME] (any `-<hash>` suffix in the name is ignored, so one file can
    be offered under a right and a wrong torch.hub hash prefix); `/<org>/<repo>/resolve/<rev>/<file>` imitates the
    Hugging Face hub (commit and sha256 etag headers)."""
    commit = '0' * 40

    def lookup(path):
        parts = path.strip('/').split('/')
        if len(parts) >= 5 and parts[2] == 'resolve':  # hub: org/repo/resolve/rev/file
            repo, filename = '/'.join(parts[:2]), '/'.join(parts[4:])
            data = files.get(f'{repo.split("/")[1]}/{filename}')
            etag = 'f' * 64 if repo.endswith('.badetag') else (_sha(data) if data else None)
            return data, {'X-Repo-Commit': commit, 'ETag': f'"{etag}"'}
        stem, dot, ext = parts[-1].partition('.')
        return files.get(stem.split('-')[0] + dot + ext), {}

    def respond(handler, with_body):
        data, headers = lookup(handler.path)
        if data is None:
            handler.send_response(404)
            handler.send_header('X-Error-Code', 'EntryNotFound')
            handler.send_header('Content-Length', '0')
            handler.end_headers()
            return
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header('Content-Length', str(len(data)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(data)

    # the hub imitation serves hub files under "<repo name>/<file>"
    files['inception_next_atto.sail_in1k/model.safetensors'] = files['good.safetensors']
    files['inception_next_atto.sail_in1k.badetag/model.safetensors'] = files['good.safetensors']
    with serve(respond) as url:
        yield url


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)


def _left_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_list_shows_zoo_tags_and_sources(capsys):
    assert weights.main(['list', 'inceptionnext_*', '--json']) == 0
    rows = {r['name']: r for r in json.loads(capsys.readouterr().out)}
    assert {'inceptionnext_tiny.sail_in1k', 'inceptionnext_base.sail_in1k_384'} <= set(rows)
    assert rows['inceptionnext_tiny.sail_in1k']['hf_hub_id'] == 'timm/inception_next_tiny.sail_in1k'
    assert rows['inceptionnext_tiny.sail_in1k']['url'].startswith('https://github.com/sail-sg/inceptionnext/')
    assert not any(n.startswith('inception_next_') for n in rows)  # timm's own names are not the zoo's
    assert weights.main(['list']) == 0
    assert 'inceptionnext_base.sail_in1k_384' in capsys.readouterr().out


def test_download_url_with_hash_prefix(tmp_path, server, files, capsys):
    url = f'{server}/good-{_sha(files["good.pth"])[:8]}.pth'  # torch.hub checks the prefix in the name
    assert weights.main(['download', NAME, '--dir', str(tmp_path), '--url', url, '--no-progress']) == 0
    assert _left_in(tmp_path) == [f'{NAME}.pth']
    assert (tmp_path / f'{NAME}.pth').read_bytes() == files['good.pth']
    assert _sha(files['good.pth']) in capsys.readouterr().out
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / f'{NAME}.pth')))
    assert torch.equal(model.stem[0].weight, torch.load(tmp_path / f'{NAME}.pth', weights_only=True)['stem.0.weight'])


@pytest.mark.parametrize('served, extra, message', [
    ('good-deadbeef.pth', [], 'invalid hash value'),
    ('good.pth', ['--sha256', '0' * 64], 'sha256 mismatch'),
    ('truncated.pth', [], 'not a readable checkpoint (truncated'),
    ('foreign.pth', [], 'another architecture'),
    ('gray.pth', [], "stem.0.weight checkpoint (40, 1, 4, 4) vs model (40, 3, 4, 4)"),
    ('missing.pth', [], 'HTTP Error 404'),
])
def test_failed_download_leaves_nothing(tmp_path, server, capsys, served, extra, message):
    target = tmp_path / 'checkpoints'
    rc = weights.main(['download', NAME, '--dir', str(target), '--url', f'{server}/{served}', '--no-progress', *extra])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert _left_in(target) == []


def test_download_hf_hub_checks_etag(tmp_path, server, files):
    path = weights.download(NAME, tmp_path, source='hf-hub', progress=False, endpoint=server)
    assert path == tmp_path / f'{NAME}.safetensors' and path.read_bytes() == files['good.safetensors']
    assert _left_in(tmp_path) == [path.name]  # no hub cache or metadata folders left behind

    bad = tmp_path / 'bad'
    _, cfg = weights._resolve_pretrained(NAME)
    with pytest.raises(weights.WeightsError, match='sha256 mismatch'):
        weights._download_hf(cfg.hf_hub_id + '.badetag', None, bad.mkdir() or bad, None, server)


def test_bad_names():
    with pytest.raises(weights.WeightsError, match="unknown model 'nope_net'"):
        weights.download('nope_net.x')
    with pytest.raises(weights.WeightsError, match='no such pretrained tag; available: inceptionnext_atto.sail_in1k'):
        weights.download('inceptionnext_atto.in22k')


@pytest.mark.slow
def test_verify(tmp_path, files, capsys):
    for name, data in files.items():
        if '/' not in name:
            (tmp_path / name).write_bytes(data)
    good = tmp_path / 'good.pth'
    assert weights.main(['verify', str(good), '--sha256', _sha(files['good.pth']), '--model', ARCH]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['fits'] == ARCH and summary['numel'] == sum(
        v.numel() for v in torch.load(good, weights_only=True).values())
    assert weights.verify(tmp_path / 'good.safetensors', model_name=ARCH)['fits'] == ARCH
    # timm adapts a 3-channel stem to in_chans=1, as create_model(pretrained=True, in_chans=1) does
    assert weights.verify(good, model_name=ARCH, model_kwargs=dict(in_chans=1))['fits'] == ARCH

    cases = [
        (['verify', str(good), '--sha256', 'abc'], 'sha256 mismatch'),
        (['verify', str(tmp_path / 'truncated.pth')], 'truncated'),
        (['verify', str(tmp_path / 'foreign.pth'), '--model', ARCH], 'unexpected in the checkpoint: conv1.0.weight'),
        (['verify', str(tmp_path / 'gray.pth'), '--model', ARCH], "the checkpoint's stem takes in_chans=1"),
        (['verify', str(good), '--model', ARCH, '--model-kwargs', 'num_classes=10'],
         "head.fc2.weight checkpoint (1000, 960) vs model (10, 960)"),
        (['verify', str(tmp_path / 'none.pth')], 'no such file'),
    ]
    for argv, message in cases:
        assert weights.main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv
    pickled = tmp_path / 'pickled.pth'
    torch.save({'net': torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(weights.WeightsError, match='holds Python objects besides tensors'):
        weights.verify(pickled)


def _lightning_checkpoint(path, num_classes=10, in_chans=1, compiled=False):
    """The layout zoo.lit.LitClassifier checkpoints have: `model.*`, EMA under `model_ema.module.*`, hparams."""
    torch.manual_seed(1)
    net = timm.create_model(ARCH, num_classes=num_classes, in_chans=in_chans)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    prefix = 'model._orig_mod.' if compiled else 'model.'
    state = {f'{prefix}{k}': v for k, v in net.state_dict().items()}
    state.update({f'model_ema.module.{k}': v for k, v in ema.items()})
    torch.save({
        'epoch': 3, 'global_step': 120, 'pytorch-lightning_version': '2.6.6',
        'state_dict': state,
        'hyper_parameters': {'model_name': ARCH, 'model_kwargs': {'num_classes': num_classes, 'in_chans': in_chans,
                                                                   'drop_path_rate': 0.1}},
        'optimizer_states': [], 'lr_schedulers': [],
    }, path)
    return net, ema


@pytest.mark.slow
@pytest.mark.parametrize('use_ema, compiled', [(False, False), (True, False), (False, True)])
def test_export_loads_with_timm(tmp_path, capsys, use_ema, compiled):
    ckpt, out = tmp_path / 'last.ckpt', tmp_path / 'digits.safetensors'
    net, ema = _lightning_checkpoint(ckpt, compiled=compiled)
    argv = ['export', str(ckpt), str(out)] + (['--ema'] if use_ema else [])
    assert weights.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['model_kwargs'] == {'num_classes': 10, 'in_chans': 1, 'drop_path_rate': 0.1}
    assert _left_in(tmp_path) == ['digits.safetensors', 'last.ckpt']

    exported = safetensors.torch.load_file(out)
    expected = ema if use_ema else net.state_dict()
    assert exported.keys() == expected.keys() and all(torch.equal(exported[k], expected[k]) for k in expected)
    meta = weights.read_metadata(out)
    assert meta['model_name'] == ARCH and meta['ema'] == str(use_ema).lower()

    # the printed snippet is the create_model(pretrained=True, pretrained_cfg_overlay=dict(file=OUT, ...)) call
    assert summary['load'].startswith(f"timm.create_model('{ARCH}', pretrained=True, "
                                      f"pretrained_cfg_overlay=dict(file='{out}', num_classes=10")
    model = eval(summary['load'], {'timm': timm})
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    if not use_ema and not compiled:  # verify reads num_classes / in_chans from the file's metadata
        assert weights.verify(out, model_name=ARCH)['fits'] == ARCH


def test_export_errors(tmp_path, atto_state):
    ckpt = tmp_path / 'last.ckpt'
    _lightning_checkpoint(ckpt)
    with pytest.raises(weights.WeightsError, match='must end in .safetensors'):
        weights.export(ckpt, tmp_path / 'out.pth')
    plain = tmp_path / 'plain.pth'
    torch.save(atto_state, plain)
    with pytest.raises(weights.WeightsError, match="not a Lightning checkpoint"):
        weights.export(plain, tmp_path / 'out.safetensors')
    no_ema = tmp_path / 'no_ema.ckpt'
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint['state_dict'] = {k: v for k, v in checkpoint['state_dict'].items() if k.startswith('model.')}
    torch.save(checkpoint, no_ema)
    with pytest.raises(weights.WeightsError, match=r'no EMA weights \(model_ema.module.\*\)'):
        weights.export(no_ema, tmp_path / 'out.safetensors', ema=True)
    with pytest.raises(weights.WeightsError, match='a Lightning checkpoint; turn it into weights first'):
        weights.verify(ckpt, model_name=ARCH)
    wrong = tmp_path / 'wrong.ckpt'
    checkpoint['hyper_parameters']['model_name'] = 'resnet10t'
    torch.save(checkpoint, wrong)
    with pytest.raises(weights.WeightsError, match='does not fit resnet10t'):
        weights.export(wrong, tmp_path / 'out.safetensors')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.ckpt', 'no_ema.ckpt', 'plain.pth', 'wrong.ckpt']


@pytest.mark.slow
def test_export_of_a_real_lit_checkpoint(tmp_path):
    """The checkpoint Lightning writes for zoo.lit.LitClassifier (EMA on) exports and reloads through timm."""
    pl = pytest.importorskip('pytorch_lightning')
    from zoo.lit import LitClassifier

    module = LitClassifier(model_name=ARCH, model_kwargs=dict(num_classes=10, in_chans=1), ema_decay=0.9)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator='cpu')
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / 'last.ckpt')
    summary = weights.export(tmp_path / 'last.ckpt', tmp_path / 'ema.safetensors', ema=True)
    assert summary['model_kwargs'] == {'num_classes': 10, 'in_chans': 1}
    model = eval(summary['load'], {'timm': timm})
    expected = module.model_ema.module.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
