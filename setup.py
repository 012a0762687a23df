"""Packaging for ecg_dml, driven by settings.ini (nbdev 2). No pkg_resources: it fails in isolated builds."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=['='])
config.read(here/'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = 'version description keywords author author_email license status min_python audience language'.split()
missing = [o for o in expected if o not in cfg]
if missing: raise ValueError(f'settings.ini is missing: {missing}')

licenses = {'apache2': 'Apache-2.0'}  # SPDX expression (license classifiers are deprecated)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
lic = licenses[cfg['license'].lower()]
min_python = cfg['min_python']
requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
scripts = [o.strip() for o in cfg.get('console_scripts', '').split() if o.strip()]
readme = here/'README.md'

setuptools.setup(
    name=cfg.get('pypi_name', cfg['lib_name']),
    version=cfg['version'],
    license=lic,
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title(),
                 'Topic :: Scientific/Engineering :: Medical Science Apps.',
                 'Topic :: Scientific/Engineering :: Artificial Intelligence'] +
                [f'Programming Language :: Python :: {o}'
                 for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    # namespace discovery also lists the data folders (sample_data/, pretrained/), which setuptools wants declared to ship them
    packages=setuptools.find_namespace_packages(include=['ecg_dml', 'ecg_dml.*'], exclude=['*.__pycache__']),
    include_package_data=True,
    package_data={'ecg_dml': ['sample_data/*', 'sample_data/**/*', 'pretrained/*', 'pretrained/**/*']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + min_python,
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': scripts,
                  'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d']},
    author=cfg['author'], author_email=cfg['author_email'], description=cfg['description'],
    keywords=cfg['keywords'],
)
