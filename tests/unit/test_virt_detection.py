from nubis.drivers.libvirt.compute import detect_virt_type

CAPS = """<capabilities><host><cpu><arch>x86_64</arch><model>Skylake</model>{features}</cpu>
</host><guest><arch name='x86_64'><domain type='qemu'/>{kvm}</arch></guest></capabilities>"""


def caps(features: str = "", kvm: bool = True) -> str:
    return CAPS.format(features=features, kvm="<domain type='kvm'/>" if kvm else "")


def test_kvm_needs_both_the_cpu_flag_and_libvirt_offering_it():
    assert detect_virt_type(caps("<feature name='vmx'/>")) == "kvm"
    assert detect_virt_type(caps("<feature name='svm'/>")) == "kvm"


def test_dev_kvm_without_cpu_virtualisation_means_tcg():
    # this machine: /dev/kvm exists (libvirt offers kvm) but the CPU has no vmx/svm
    assert detect_virt_type(caps("<feature name='sse4.2'/>")) == "qemu"


def test_no_kvm_domain_means_tcg():
    assert detect_virt_type(caps("<feature name='vmx'/>", kvm=False)) == "qemu"
