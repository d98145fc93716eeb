import os,random,subprocess,shutil,sys
random.seed(int(sys.argv[1])); N=int(sys.argv[2]); base=sys.argv[3]; fname=sys.argv[4]
B='/tmp/audit-input/base/'+base; d='/tmp/audit-input/fuzz/c'+sys.argv[1]
if os.path.exists(d): shutil.rmtree(d)
shutil.copytree(B,d)
raw=open(B+'/'+fname,'rb').read()
vals=[b'0',b'-1',b'1e308',b'-1e308',b'2147483647',b'2147483648',b'4294967296',b'9223372036854775807',b'null',b'[]',b'{}',b'"x"',b'true',b'1.5',b'NaN',b'Infinity',b'1e-320']
bad=0
import re
nums=[m.span() for m in re.finditer(rb'-?\d+(\.\d+)?(e-?\d+)?|null|true|false|"[^"]*"',raw)]
for i in range(N):
    h=bytearray(raw)
    for _ in range(random.randint(1,3)):
        a,b=random.choice(nums)
        if b<=len(h): h[a:b]=random.choice(vals)
    open(d+'/'+fname,'wb').write(h)
    for cmd in (['info',d],['generate',d,'--ids','1,2','-n','1','--backend','cpu']):
        try:
            p=subprocess.run(['/tmp/audit/build/bora']+cmd,capture_output=True,timeout=30); rc=p.returncode
        except subprocess.TimeoutExpired: rc='TIMEOUT'; p=None
        if rc not in (0,1):
            bad+=1; fn='/tmp/audit-input/fuzz/cfgcrash_%s_%d'%(sys.argv[1],i); open(fn,'wb').write(h); print('BAD',rc,fn,p and p.stderr[:300],flush=True)
print('done',N,'bad',bad)
